//! The fast parser (not `replay --fast`): lines exactly as
//! [`format_line`](super::format_line) writes them, scanned once, straight
//! into an [`Observation`].
//!
//! Owns only the recognition of that one shape; it never decides that a line
//! is bad. Anything it is not certain about (another key order, whitespace,
//! an escape or control character in a string, an exponent or more than three
//! decimals in `t`, an integer written `-0`, an unknown key, a value the decoders refuse, bytes
//! after the object) makes it decline with `None`, and the line goes to the
//! serde_json parser, which alone finds the [`Reason`]. So a line reads the
//! same either way, by construction: the only outcomes here are a line the
//! general parser would accept identically, and [`Reason::UnknownScanner`],
//! which the general parser also reports only once the whole line is
//! otherwise good.
//!
//! It needs no UTF-8 check of the whole line: everything outside strings is
//! ASCII by the grammar below, and the strings that are kept (`scanner`,
//! `name`, `source`) are checked on their own; the others are hex, addresses
//! and UUIDs, whose decoders refuse any non-ASCII byte.

use super::{
    Reason, addr_from_bytes, canonical_uuid, company_from_bytes, decode_hex, find_byte,
    resolve_scanner, wifi_kind_from_bytes,
};
use crate::core::types::{
    ManufacturerData, Observation, Rssi, ScannerIdx, ServiceData, Sighting, Timestamp, WifiPresence,
};
use crate::core::zones::Layout;

/// Parses `line` (without its newline) if it has exactly the writer's shape.
///
/// `None`: not recognised with certainty; parse it the general way.
pub(super) fn parse(line: &[u8], layout: &Layout) -> Option<Result<Observation, Reason>> {
    match parse_prefix(line, layout)? {
        (parsed, len) if len == line.len() => Some(parsed),
        _ => None,
    }
}

/// Parses the line that `bytes` start with, up to and including the
/// object's closing `}`, if it has exactly the writer's shape; also returns
/// that length. What follows is for the caller to judge (a line's end, or
/// anything else, which makes this parse void).
///
/// Never reads past a newline, except while failing: no token it accepts
/// contains one. So a reader can run this on its buffer and learn where the
/// line ends from it, without searching for the newline first.
pub(super) fn parse_prefix(
    bytes: &[u8],
    layout: &Layout,
) -> Option<(Result<Observation, Reason>, usize)> {
    let mut c = Cursor::new(bytes);
    c.lit(b"{\"t\":")?;
    let at = c.time()?;
    // Each returns the whole answer, so that a 256-byte observation is not
    // copied once more on its way out.
    if c.lit(b",\"scanner\":\"").is_some() {
        ble(c, at, layout)
    } else {
        c.lit(b",\"wifi\":\"")?;
        wifi(c, at)
    }
}

/// `{"t":…,"scanner":"…","addr":"…","rssi":…,"tx_power":…,"name":…,"mfg":{…},"svc":{…},"uuids":[…]}`
/// from just after the scanner's opening quote.
fn ble(
    mut c: Cursor<'_>,
    at: Timestamp,
    layout: &Layout,
) -> Option<(Result<Observation, Reason>, usize)> {
    let scanner = scanner(layout, c.text_bytes()?)?;
    c.lit(b",\"addr\":\"")?;
    let addr = addr_from_bytes(c.fixed(17)?)?;
    c.lit(b",\"rssi\":")?;
    let rssi = c.int8()?;
    let mut s = Sighting::new(at, ScannerIdx(0), addr, Rssi(i16::from(rssi)));
    c.lit(b",\"tx_power\":")?;
    if c.lit(b"null").is_none() {
        s.tx_power = Some(c.int8()?);
    }
    c.lit(b",\"name\":")?;
    let name = if c.lit(b"null").is_some() {
        None
    } else {
        c.lit(b"\"")?;
        Some(c.text()?)
    };
    c.lit(b",\"mfg\":{")?;
    if !c.eat(b'}') {
        loop {
            c.lit(b"\"")?;
            let company = company_from_bytes(c.until_quote()?)?;
            c.lit(b":\"")?;
            let data = decode_hex(c.until_quote()?)?;
            s.manufacturer_data.push(ManufacturerData { company, data });
            if c.eat(b'}') {
                break;
            }
            c.lit(b",")?;
        }
    }
    c.lit(b",\"svc\":{")?;
    if !c.eat(b'}') {
        loop {
            c.lit(b"\"")?;
            let uuid = canonical_uuid(c.fixed(36)?)?;
            c.lit(b":\"")?;
            let data = decode_hex(c.until_quote()?)?;
            s.service_data.push(ServiceData { uuid, data });
            if c.eat(b'}') {
                break;
            }
            c.lit(b",")?;
        }
    }
    c.lit(b",\"uuids\":[")?;
    if !c.eat(b']') {
        loop {
            c.lit(b"\"")?;
            s.service_uuids.push(canonical_uuid(c.fixed(36)?)?);
            if c.eat(b']') {
                break;
            }
            c.lit(b",")?;
        }
    }
    c.end()?;
    // Judged last, as the general parser does: any other fault wins.
    let Some(scanner) = scanner else {
        return Some((Err(Reason::UnknownScanner), c.consumed()));
    };
    s.scanner = scanner;
    s.name = name.map(Box::from);
    Some((Ok(Observation::Ble(s)), c.consumed()))
}

/// [`resolve_scanner`] of a name given as the bytes of a string that needs
/// no unescaping; `None` if they are not UTF-8.
fn scanner(layout: &Layout, name: &[u8]) -> Option<Option<ScannerIdx>> {
    // A name equal to one in the layout is UTF-8 without checking.
    let name = match layout.scanners.iter().find(|s| s.id.as_bytes() == name) {
        Some(known) => &known.id,
        None => std::str::from_utf8(name).ok()?,
    };
    Some(resolve_scanner(layout, name))
}

/// `{"t":…,"wifi":"…","mac":"…","source":"…"}` from just after the kind's
/// opening quote.
fn wifi(mut c: Cursor<'_>, at: Timestamp) -> Option<(Result<Observation, Reason>, usize)> {
    let kind = wifi_kind_from_bytes(c.until_quote()?)?;
    c.lit(b",\"mac\":\"")?;
    let mac = addr_from_bytes(c.fixed(17)?)?;
    c.lit(b",\"source\":\"")?;
    let source = c.text()?;
    c.end()?;
    let wifi = WifiPresence {
        at,
        source: Box::from(source),
        mac,
        kind,
    };
    Some((Ok(Observation::Wifi(wifi)), c.consumed()))
}

/// The value of ASCII decimal digits (few enough not to overflow).
fn decimal(digits: &[u8]) -> i64 {
    digits.iter().fold(0, |v, &d| v * 10 + i64::from(d - b'0'))
}

/// A position in the bytes being parsed. Every method consumes what it
/// recognises and returns `None` on anything else (the line is then
/// abandoned, so what a failed call consumed does not matter).
struct Cursor<'a> {
    /// What is left to read.
    rest: &'a [u8],
    /// The length of all of it.
    len: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor {
            rest: bytes,
            len: bytes.len(),
        }
    }

    /// How many bytes have been read.
    fn consumed(&self) -> usize {
        self.len - self.rest.len()
    }

    /// Exactly `lit`.
    fn lit(&mut self, lit: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(lit)?;
        Some(())
    }

    /// One byte `b`, if it is next.
    fn eat(&mut self, b: u8) -> bool {
        match self.rest {
            [first, rest @ ..] if *first == b => {
                self.rest = rest;
                true
            }
            _ => false,
        }
    }

    /// The closing `}` of the line's object.
    fn end(&mut self) -> Option<()> {
        self.lit(b"}")
    }

    /// The bytes up to the next `"`, which is consumed. Not checked: for
    /// values whose decoder accepts only ASCII hex digits and separators, so
    /// that an escape (and the `\"` that may end this early) fails there.
    fn until_quote(&mut self) -> Option<&'a [u8]> {
        let end = find_byte(self.rest, b'"')?;
        let (s, rest) = self.rest.split_at(end);
        self.rest = &rest[1..];
        Some(s)
    }

    /// [`Cursor::until_quote`] for a value of exactly `n` bytes: a longer
    /// or shorter one fails here or in its decoder.
    fn fixed(&mut self, n: usize) -> Option<&'a [u8]> {
        let (s, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest.strip_prefix(b"\"")?;
        Some(s)
    }

    /// A string's contents up to its closing quote, if they need no
    /// unescaping and serde_json would accept them: no escape, no control
    /// character (which JSON forbids raw). Not yet checked for UTF-8.
    fn text_bytes(&mut self) -> Option<&'a [u8]> {
        let s = self.until_quote()?;
        if s.iter().any(|&b| b == b'\\' || b < 0x20) {
            return None;
        }
        Some(s)
    }

    /// [`Cursor::text_bytes`], valid UTF-8.
    fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.text_bytes()?).ok()
    }

    /// Up to `max` decimal digits, as many as there are.
    fn run_of_digits(&mut self, max: usize) -> &'a [u8] {
        let n = self
            .rest
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_digit())
            .count();
        let (digits, rest) = self.rest.split_at(n);
        self.rest = rest;
        digits
    }

    /// Up to `max` decimal digits without a leading zero (JSON's integer
    /// part); a lone `0` is zero. More digits are left for the next literal
    /// to trip over.
    fn digits(&mut self, max: usize) -> Option<i64> {
        if self.eat(b'0') {
            return Some(0);
        }
        match self.run_of_digits(max) {
            [] => None,
            digits => Some(decimal(digits)),
        }
    }

    /// `t` as the writer puts it: `-?int(.d{1,3})?`, at most 11 integer
    /// digits. The milliseconds are then exact, and equal to what the general
    /// path gets by rounding `f64` seconds × 1000: below 10^14 ms (2^47) the
    /// float error is far under half a millisecond.
    fn time(&mut self) -> Option<Timestamp> {
        let negative = self.eat(b'-');
        let mut ms = self.digits(11)? * 1000;
        if self.eat(b'.') {
            let frac = self.run_of_digits(3);
            if frac.is_empty() {
                return None;
            }
            // To milliseconds: ".5" is 500.
            ms += decimal(frac) * [100, 10, 1][frac.len() - 1];
        }
        Some(Timestamp(if negative { -ms } else { ms }))
    }

    /// An integer in `i8`'s range. Not `-0`, which serde_json reads as a
    /// float and so refuses as an integer.
    fn int8(&mut self) -> Option<i8> {
        let negative = self.eat(b'-');
        let v = self.digits(3)?;
        if negative && v == 0 {
            return None;
        }
        i8::try_from(if negative { -v } else { v }).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::zones::Scanner;
    use crate::source::replay::DEFAULT_SCANNER;
    use crate::source::replay::tests::two_scanners;

    #[test]
    fn declines_what_it_is_not_sure_of() {
        let l = two_scanners();
        let ok = r#"{"t":1763712000.125,"scanner":"door","addr":"C4:7C:8D:6A:11:02","rssi":-67,"tx_power":null,"name":null,"mfg":{},"svc":{},"uuids":[]}"#;
        assert!(matches!(parse(ok.as_bytes(), &l), Some(Ok(_))));
        for (from, to) in [
            ("1763712000.125", "1763712000.1250"),
            ("1763712000.125", "1.763712000125e9"),
            ("1763712000.125", "123456789012.125"),
            ("1763712000.125", "01763712000.125"),
            ("1763712000.125", "1763712000."),
            ("-67", "-0"),
            ("-67", "-067"),
            ("-67", "-67.0"),
            ("\"door\"", "\"do\\u006fr\""),
            ("\"door\"", "\"do\tor\""),
            ("\"name\":null", "\"name\":\"a\\\"b\""),
            ("\"name\":null", "\"name\": null"),
            (r#""mfg":{}"#, r#""mfg":null"#),
            (
                r#""uuids":[]"#,
                r#""uuids":["0000feaa00001000800000805f9b34fb"]"#,
            ),
            ("[]}", "[]} "),
            ("[]}", "[],\"x\":1}"),
        ] {
            let line = ok.replacen(from, to, 1);
            assert_ne!(line, ok);
            assert_eq!(parse(line.as_bytes(), &l), None, "{line}");
        }
        let unknown = ok.replace("door", "aisle9");
        assert_eq!(
            parse(unknown.as_bytes(), &l),
            Some(Err(Reason::UnknownScanner))
        );
        // One scanner: any name is that one, and absent means "local".
        let one = Layout::single("S", DEFAULT_SCANNER);
        assert!(matches!(parse(unknown.as_bytes(), &one), Some(Ok(_))));
    }

    #[test]
    fn times_are_exact_milliseconds() {
        let l = two_scanners();
        for (t, ms) in [
            ("0", 0),
            ("-0", 0),
            ("-0.001", -1),
            ("1.5", 1500),
            ("1.05", 1050),
            ("99999999999.999", 99_999_999_999_999),
            ("-1.500", -1500),
        ] {
            let line =
                format!(r#"{{"t":{t},"wifi":"seen","mac":"00:00:00:00:00:01","source":"x"}}"#);
            let Some(Ok(obs)) = parse(line.as_bytes(), &l) else {
                panic!("{line}");
            };
            assert_eq!(obs.at(), Timestamp(ms), "{line}");
        }
    }

    // ---- Property tests: the fast path against the general parser. ----

    use proptest::prelude::*;
    use proptest::sample::SizeRange;

    use crate::core::types::{BdAddr, Payload, Uuid128, WifiKind};
    use crate::source::replay::{
        Lines, MAX_LINE, Reader, ReplayStats, find_newline, format_line, parse_general,
    };

    /// Scanners the lines are written with; the reader's layouts below know
    /// all of them, some of them, one (so any name is it) or none.
    const WRITTEN: [&str; 3] = ["door", "shelf", "caf\u{e9} \"2\""];

    fn layout(names: &[&str]) -> Layout {
        let mut l = Layout::single("S", "x");
        l.scanners.clear();
        for name in names {
            l.scanners.push(Scanner {
                id: (*name).into(),
                position: (0.0, 0.0),
                rssi_offset: 0.0,
                path_loss_exponent: 2.0,
            });
        }
        l
    }

    fn readers() -> [Layout; 4] {
        [
            layout(&WRITTEN),
            layout(&WRITTEN[..2]),
            layout(&["anything"]),
            layout(&[]),
        ]
    }

    /// What [`Lines::line`](super::super::reader::Lines) does without the fast path.
    fn general(line: &[u8], layout: &Layout) -> Result<Observation, Reason> {
        std::str::from_utf8(line)
            .map_err(|_| Reason::NotUtf8)
            .and_then(|line| parse_general(line, layout))
    }

    /// The fast path may decline, but never disagree.
    fn agree(line: &[u8]) -> Result<(), TestCaseError> {
        for l in &readers() {
            if let Some(fast) = parse(line, l) {
                prop_assert_eq!(fast, general(line, l), "{}", String::from_utf8_lossy(line));
            }
        }
        Ok(())
    }

    fn payload(max: usize) -> impl Strategy<Value = Payload> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Payload::from_vec)
    }

    fn some<T: std::fmt::Debug>(
        s: impl Strategy<Value = T>,
        n: impl Into<SizeRange>,
    ) -> impl Strategy<Value = Vec<T>> {
        proptest::collection::vec(s, n)
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![3 => "[ -~]{0,24}", 1 => "\\PC{0,12}", 1 => any::<String>()]
    }

    /// Times the fast path takes (at most 11 integer digits), and any.
    fn time() -> impl Strategy<Value = Timestamp> {
        prop_oneof![
            4 => -99_999_999_999_999i64..=99_999_999_999_999,
            1 => any::<i64>(),
        ]
        .prop_map(Timestamp)
    }

    fn observation() -> impl Strategy<Value = Observation> {
        let ble = (
            (time(), 0u16..3, any::<[u8; 6]>()),
            (
                prop_oneof![4 => -128i16..=127, 1 => any::<i16>()],
                any::<Option<i8>>(),
            ),
            proptest::option::of(text()),
            some((any::<u16>(), payload(40)), 0..3),
            some((any::<u128>(), payload(40)), 0..3),
            some(any::<u128>(), 0..3),
        )
            .prop_map(
                |((at, scanner, addr), (rssi, tx_power), name, mfg, svc, uuids)| {
                    let mut s = Sighting::new(at, ScannerIdx(scanner), BdAddr(addr), Rssi(rssi));
                    s.tx_power = tx_power;
                    s.name = name.map(Box::from);
                    for (company, data) in mfg {
                        s.manufacturer_data.push(ManufacturerData { company, data });
                    }
                    for (uuid, data) in svc {
                        s.service_data.push(ServiceData {
                            uuid: Uuid128(uuid),
                            data,
                        });
                    }
                    s.service_uuids.extend(uuids.into_iter().map(Uuid128));
                    Observation::Ble(s)
                },
            );
        let wifi = (
            time(),
            prop_oneof![
                Just(WifiKind::Joined),
                Just(WifiKind::Seen),
                Just(WifiKind::Left)
            ],
            any::<[u8; 6]>(),
            text(),
        )
            .prop_map(|(at, kind, mac, source)| {
                Observation::Wifi(WifiPresence {
                    at,
                    source: source.into(),
                    mac: BdAddr(mac),
                    kind,
                })
            });
        prop_oneof![4 => ble, 1 => wifi]
    }

    fn written(obs: &Observation) -> Vec<u8> {
        let mut line = Vec::new();
        format_line(obs, &layout(&WRITTEN), &mut line).unwrap();
        assert_eq!(line.pop(), Some(b'\n'));
        line
    }

    /// Whether the fast path must take a written line: nothing escaped, and
    /// every number in the shape it reads.
    fn plain(obs: &Observation, line: &[u8]) -> bool {
        let in_range = |at: Timestamp| at.0.unsigned_abs() < 100_000_000_000_000;
        !line.contains(&b'\\')
            && match obs {
                Observation::Ble(s) => in_range(s.at) && i8::try_from(s.rssi.0).is_ok(),
                Observation::Wifi(w) => in_range(w.at),
            }
    }

    /// Damage to a line.
    #[derive(Clone, Debug)]
    enum Mutation {
        Set(usize, u8),
        Truncate(usize),
        Insert(usize, &'static str),
        /// Swap two top-level members.
        Swap(usize, usize),
        /// Drop a top-level member.
        Drop(usize),
        /// Replace a top-level member's value.
        Value(usize, &'static str),
    }

    /// Values put in place of a member's: the edges of what either parser takes.
    const VALUES: &[&str] = &[
        "-0",
        "0",
        "-0.0",
        "0.0",
        "1",
        "-1",
        "127",
        "128",
        "-128",
        "-129",
        "1e2",
        "1E2",
        "01",
        "-01",
        "1.",
        ".5",
        "1.5",
        "1.25",
        "-1.05",
        "1.2345",
        "1763712000.1239",
        "99999999999.999",
        "100000000000",
        "-99999999999.999",
        "null",
        "true",
        "\"x\"",
        "\"door\"",
        "\"shelf\"",
        "\"00:00:00:00:00:01\"",
        "\"00-00-00-00-00-01\"",
        "{}",
        "[]",
        "{\"76\":\"02\"}",
        "{\"076\":\"02\"}",
        "{\"65536\":\"\"}",
        "{\"76\":\"0\"}",
        "[\"0000feaa-0000-1000-8000-00805f9b34fb\"]",
        "[\"0000FEAA00001000800000805F9B34FB\"]",
        "\"seen\"",
        "\"gone\"",
        "\"tab\there\"",
        "\"\u{1}\"",
        "\"\u{7f}\u{e9}\"",
    ];

    fn mutation() -> impl Strategy<Value = Mutation> {
        const INSERTS: &[&str] = &[
            " ",
            "\t",
            "\r",
            "\n",
            "\\",
            "\\\"",
            "\\u0041",
            "\\n",
            "\\/",
            "\"",
            ",",
            ":",
            "{",
            "}",
            "[",
            "]",
            "0",
            "-",
            ".",
            "e3",
            "E-2",
            ".5",
            "null",
            "\u{e9}",
            "\u{1}",
            "\u{7f}",
            ",\"future\":[1,{\"x\":2}]",
            ",\"t\":1",
            "\"t\":2,",
        ];
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
            any::<usize>().prop_map(Mutation::Truncate),
            (any::<usize>(), proptest::sample::select(INSERTS))
                .prop_map(|(at, s)| Mutation::Insert(at, s)),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
            any::<usize>().prop_map(Mutation::Drop),
            (any::<usize>(), proptest::sample::select(VALUES))
                .prop_map(|(at, v)| Mutation::Value(at, v)),
        ]
    }

    /// The top-level members of a line that is one compact JSON object,
    /// by tracking nesting and strings.
    fn members(line: &[u8]) -> Option<Vec<Vec<u8>>> {
        let inner = line.strip_prefix(b"{")?.strip_suffix(b"}")?;
        let (mut out, mut start, mut depth, mut in_str, mut escaped) =
            (Vec::new(), 0, 0i32, false, false);
        for (i, &b) in inner.iter().enumerate() {
            match (in_str, escaped, b) {
                (true, true, _) => escaped = false,
                (true, false, b'\\') => escaped = true,
                (true, false, b'"') | (false, _, b'"') => in_str = !in_str,
                (false, _, b'{' | b'[') => depth += 1,
                (false, _, b'}' | b']') => depth -= 1,
                (false, _, b',') if depth == 0 => {
                    out.push(inner[start..i].to_vec());
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(inner[start..].to_vec());
        Some(out)
    }

    fn join(members: &[Vec<u8>]) -> Vec<u8> {
        let mut line = b"{".to_vec();
        line.extend(members.join(&b","[..]));
        line.push(b'}');
        line
    }

    fn mutate(line: &mut Vec<u8>, m: &Mutation) {
        let len = line.len();
        match *m {
            Mutation::Set(at, b) if len > 0 => line[at % len] = b,
            Mutation::Truncate(at) => line.truncate(at % (len + 1)),
            Mutation::Insert(at, s) => {
                let at = at % (len + 1);
                line.splice(at..at, s.bytes());
            }
            Mutation::Swap(a, b) => {
                if let Some(mut ms) = members(line) {
                    let n = ms.len();
                    ms.swap(a % n, b % n);
                    *line = join(&ms);
                }
            }
            Mutation::Value(a, v) => {
                if let Some(mut ms) = members(line) {
                    let n = ms.len();
                    let member = &mut ms[a % n];
                    if let Some(colon) = member.iter().position(|&b| b == b':') {
                        member.truncate(colon + 1);
                        member.extend(v.bytes());
                    }
                    *line = join(&ms);
                }
            }
            Mutation::Drop(a) => {
                if let Some(mut ms) = members(line) {
                    let n = ms.len();
                    ms.remove(a % n);
                    *line = join(&ms);
                }
            }
            Mutation::Set(..) => {}
        }
    }

    /// What a [`Reader`] must yield, from first principles and the general
    /// parser alone: split at each `\n`, one `\r` before it dropped, a BOM
    /// dropped from the first line, blank lines counted apart.
    fn read_by_lines(input: &[u8], layout: &Layout) -> (Vec<Observation>, ReplayStats) {
        let mut lines = Lines::new(layout);
        let mut obs = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let (mut line, next) = match find_newline(rest) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            if line.len() > MAX_LINE {
                lines.too_long();
                continue;
            }
            line = line.strip_suffix(b"\r").unwrap_or(line);
            if lines.stats.lines == 0 {
                line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            }
            if line.trim_ascii_start().is_empty() {
                lines.stats.lines += 1;
                lines.stats.blank += 1;
                continue;
            }
            obs.extend(lines.parsed(general(line, layout)));
            obs.extend(lines.ready.drain(..));
        }
        lines.finish();
        obs.extend(lines.ready.drain(..));
        (obs, lines.stats)
    }

    /// Reads `input` through buffers of several sizes (lines straddling
    /// them or not) and checks each against [`read_by_lines`].
    fn reads_as_by_lines(input: &[u8], capacities: &[usize]) -> Result<(), TestCaseError> {
        for l in &readers() {
            let expected = read_by_lines(input, l);
            for &capacity in capacities {
                let mut r = Reader::new(std::io::BufReader::with_capacity(capacity, input), l);
                let obs: Vec<_> = r.by_ref().map(Result::unwrap).collect();
                prop_assert_eq!(&obs, &expected.0, "capacity {}", capacity);
                prop_assert_eq!(r.stats(), &expected.1, "capacity {}", capacity);
            }
        }
        Ok(())
    }

    /// One line of a recording, before its line ending.
    fn recording_line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => observation().prop_map(|o| written(&o)),
            2 => (observation(), some(mutation(), 1..3)).prop_map(|(o, ms)| {
                let mut line = written(&o);
                for m in &ms {
                    mutate(&mut line, m);
                }
                line
            }),
            // Whitespace where a line ends or begins, which JSON allows.
            1 => (observation(), "[ \t\r]{1,2}", any::<bool>()).prop_map(|(o, space, before)| {
                let mut line = written(&o);
                if before {
                    line.splice(0..0, space.bytes());
                } else {
                    line.extend(space.bytes());
                }
                line
            }),
            1 => "[ \t]{0,3}".prop_map(String::into_bytes),
            1 => some(any::<u8>(), 0..20),
        ]
    }

    #[test]
    fn lines_at_the_length_limit_read_as_by_lines() {
        let ok = |t: u32, len: usize| {
            let head = format!(
                r#"{{"t":{t},"scanner":"door","addr":"00:00:00:00:00:01","rssi":-60,"tx_power":null,"name":""#
            );
            let tail = r#"","mfg":{},"svc":{},"uuids":[]}"#;
            let pad = len - head.len() - tail.len();
            format!("{head}{}{tail}", "x".repeat(pad))
        };
        for ending in ["\n", "\r\n"] {
            let mut input = String::new();
            for (t, len) in [
                (1, 200),
                (2, MAX_LINE - 2),
                (3, MAX_LINE - 1),
                (4, MAX_LINE),
            ] {
                input.push_str(&ok(t, len));
                input.push_str(ending);
            }
            input.push_str(&ok(5, MAX_LINE + 1));
            input.push_str(ending);
            input.push_str(&ok(6, 300));
            input.push_str(ending);
            let (obs, stats) = read_by_lines(input.as_bytes(), &readers()[0]);
            assert_eq!(stats.too_long, if ending == "\n" { 1 } else { 2 });
            assert_eq!(obs.len(), if ending == "\n" { 5 } else { 4 });
            reads_as_by_lines(input.as_bytes(), &[64, 300, 1 << 16, 1 << 18]).unwrap();
        }
    }

    proptest! {
        #[test]
        fn recordings_read_as_by_lines(
            bom in any::<bool>(),
            lines in some((recording_line(), any::<bool>()), 0..12),
            last_newline in any::<bool>(),
        ) {
            let mut input = Vec::new();
            if bom {
                input.extend_from_slice(b"\xEF\xBB\xBF");
            }
            for (i, (line, crlf)) in lines.iter().enumerate() {
                input.extend_from_slice(line);
                if i + 1 < lines.len() || last_newline {
                    input.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                }
            }
            reads_as_by_lines(&input, &[1, 7, 64, 300, 4096])?;
        }

        #[test]
        fn written_lines_read_the_same_both_ways(obs in observation()) {
            let line = written(&obs);
            if plain(&obs, &line) {
                let reader = layout(&WRITTEN);
                let fast = parse(&line, &reader);
                prop_assert!(fast.is_some(), "declined {}", String::from_utf8_lossy(&line));
                prop_assert_eq!(fast, Some(Ok(obs.clone())));
            }
            agree(&line)?;
        }

        #[test]
        fn damaged_lines_read_the_same_both_ways(obs in observation(), ms in some(mutation(), 1..4)) {
            let mut line = written(&obs);
            for m in &ms {
                mutate(&mut line, m);
            }
            agree(&line)?;
        }

        #[test]
        fn odd_values_read_the_same_both_ways(obs in observation()) {
            let line = written(&obs);
            let n = members(&line).map_or(0, |ms| ms.len());
            for at in 0..n {
                for v in VALUES {
                    let mut odd = line.clone();
                    mutate(&mut odd, &Mutation::Value(at, v));
                    agree(&odd)?;
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(obs in observation(), cut in any::<usize>(), tail in some(any::<u8>(), 0..80)) {
            let mut line = written(&obs);
            line.truncate(cut % (line.len() + 1));
            line.extend(&tail);
            for l in &readers() {
                let _ = parse(&line, l);
                let _ = parse(&tail, l);
            }
        }
    }
}
