//! Recordings: reads and writes the JSON Lines format of
//! `formats/replay.md`, one observation per line.
//!
//! Owns the line format and its error accounting, nothing else: it maps
//! scanner names through the [`Layout`] but never decodes frames, identifies
//! anyone or filters devices. A malformed line is counted by reason in
//! [`ReplayStats`] and skipped; only an I/O error stops a [`Reader`]. Reasons
//! name fields and line numbers, never values: most addresses in a recording
//! belong to people who did not opt in, so none may reach a message or a log.
//!
//! Parsing is allocation-free on the common path: a line is parsed where it
//! lies in the reader's buffer (copied only when it straddles a refill, into
//! a reused buffer), strings are borrowed from it, hex and addresses are
//! decoded straight into the inline [`Payload`]s and arrays, and only a
//! present `name` (and a Wi-Fi line's `source`) allocates.
//!
//! Two parsers read a line. Lines exactly as [`format_line`] writes them
//! (everything `nearcast record` produces) are scanned once by a
//! hand-written fast parser (`fast_parser`; it has nothing to do with
//! `replay --fast`); any other line, and any line the fast parser is not
//! certain of, goes to the general parser, serde_json visitors
//! (`serde_parser`), which alone decides what is wrong with a line. Both give the same result for every
//! line: what is accepted, and every skip reason. A [`Reader`] runs the fast
//! path on its buffer as it stands and learns from it where the line ends,
//! so such a line is scanned exactly once: no separate newline search, no
//! UTF-8 check of the whole line.
//!
//! A line of invalid UTF-8 is skipped as such, as is any line that is not one
//! JSON object; unknown keys are ignored, so that newer writers can add
//! fields. `scanner` may be absent or null (then [`DEFAULT_SCANNER`]); `mfg`,
//! `svc` and `uuids` may be absent or null (then empty).
//!
//! Time order (`order`): a line more than [`MAX_BACKWARDS`] older than the
//! newest line so far is skipped as out of order (a clock step or a bad
//! line); smaller steps back are passed on unchanged, because merging
//! several scanners' reports reorders them slightly. If [`RESYNC_AFTER`]
//! lines in a row are out of order, the recording's clock really did step
//! back (a box without a real-time clock syncing late), and the reader
//! follows the new timeline from that line on. A line more than
//! [`MAX_BACKWARDS`] ahead of the newest is held until the next line: if
//! that one carries on from before it, the held line is skipped as
//! implausible (one bogus future line costs itself, not the lines after
//! it); otherwise the recording moved on, however far.
//!
//! Layout: this file holds the format's constants, skip reasons and
//! statistics; `reader` the [`Reader`], `order` the time-order rules,
//! `writer` the [`Writer`], `text` the tokens both parsers decode alike,
//! `fast_parser` and `serde_parser` the two parsers.

mod fast_parser;
mod order;
mod reader;
mod serde_parser;
mod text;
mod writer;

use std::fmt;
use std::time::Duration;

use smallvec::SmallVec;

use super::Error;
use crate::core::types::{
    BdAddr, ManufacturerData, Observation, Payload, Rssi, ScannerIdx, ServiceData, Sighting,
    Timestamp, Uuid128, WifiKind, WifiPresence, hex_nibble,
};
use crate::core::zones::Layout;
pub use reader::Reader;
use reader::*;
use serde_parser::*;
use text::*;
pub use writer::{Writer, format_line};

/// Longest line read, in bytes (without its newline). A BLE sighting is a few
/// hundred bytes; anything much longer is corruption, and is skipped without
/// being held in memory.
pub const MAX_LINE: usize = 64 * 1024;

/// How far a line may go back in time before it is skipped as out of order.
pub const MAX_BACKWARDS: Duration = Duration::from_secs(5);

/// Consecutive out-of-order lines after which the reader accepts that the
/// recording's clock stepped back and follows it.
pub const RESYNC_AFTER: u32 = 100;

/// The scanner name assumed when a line has none.
pub const DEFAULT_SCANNER: &str = "local";

/// A field of a recording line, as named in the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `t`.
    T,
    /// `scanner`.
    Scanner,
    /// `addr`.
    Addr,
    /// `rssi`.
    Rssi,
    /// `tx_power`.
    TxPower,
    /// `name`.
    Name,
    /// `mfg`.
    Mfg,
    /// `svc`.
    Svc,
    /// `uuids`.
    Uuids,
    /// `wifi`.
    Wifi,
    /// `mac`.
    Mac,
    /// `source`.
    Source,
}

impl Field {
    /// Every field, in the order the format lists them.
    pub const ALL: [Field; 12] = [
        Field::T,
        Field::Scanner,
        Field::Addr,
        Field::Rssi,
        Field::TxPower,
        Field::Name,
        Field::Mfg,
        Field::Svc,
        Field::Uuids,
        Field::Wifi,
        Field::Mac,
        Field::Source,
    ];

    /// The field a JSON key names, if any.
    #[must_use]
    pub fn from_key(key: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.key() == key)
    }

    /// The JSON key.
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            Field::T => "t",
            Field::Scanner => "scanner",
            Field::Addr => "addr",
            Field::Rssi => "rssi",
            Field::TxPower => "tx_power",
            Field::Name => "name",
            Field::Mfg => "mfg",
            Field::Svc => "svc",
            Field::Uuids => "uuids",
            Field::Wifi => "wifi",
            Field::Mac => "mac",
            Field::Source => "source",
        }
    }
}

/// A data section of a sighting, by its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Section {
    /// `mfg[company]`.
    Mfg(u16),
    /// `svc[uuid]`.
    Svc(Uuid128),
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Mfg(company) => write!(f, "mfg[{company}]"),
            Section::Svc(uuid) => write!(f, "svc[{uuid}]"),
        }
    }
}

/// Why a line was skipped. Never carries a value from the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Longer than [`MAX_LINE`].
    TooLong,
    /// Not valid UTF-8.
    NotUtf8,
    /// Not one JSON object: a syntax error, a truncated line, another JSON
    /// type, or something after the object.
    Json,
    /// A required field is absent.
    Missing(Field),
    /// A field has the wrong type or an impossible value (a non-finite or
    /// out-of-range `t`, a malformed address, an RSSI outside −128..=127, a
    /// company id that is not a decimal `u16`, a malformed UUID, …).
    Invalid(Field),
    /// A data section's value is not an even number of hex digits.
    BadHex(Section),
    /// The scanner is not in the layout, and the layout has several.
    UnknownScanner,
    /// More than [`MAX_BACKWARDS`] older than an earlier line.
    OutOfOrder,
    /// More than [`MAX_BACKWARDS`] ahead of the lines either side of it.
    Implausible,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::TooLong => write!(f, "line longer than {MAX_LINE} bytes"),
            Reason::NotUtf8 => f.write_str("not UTF-8"),
            Reason::Json => f.write_str("not a single JSON object"),
            Reason::Missing(field) => write!(f, "missing `{}`", field.key()),
            Reason::Invalid(Field::T) => f.write_str("`t` is not a finite Unix time in seconds"),
            Reason::Invalid(field) => write!(f, "invalid `{}`", field.key()),
            Reason::BadHex(section) => write!(f, "bad hex in {section}"),
            Reason::UnknownScanner => f.write_str("scanner not in the layout"),
            Reason::OutOfOrder => write!(
                f,
                "more than {} s before an earlier line",
                MAX_BACKWARDS.as_secs()
            ),
            Reason::Implausible => write!(
                f,
                "more than {} s ahead of the lines either side of it",
                MAX_BACKWARDS.as_secs()
            ),
        }
    }
}

/// A skipped line, for messages such as `line 17: bad hex in mfg[76]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: u64,
    /// Why it was skipped.
    pub reason: Reason,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// What a [`Reader`] saw: observations by kind and skipped lines by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Lines read, skipped and blank ones included.
    pub lines: u64,
    /// BLE sightings yielded.
    pub ble: u64,
    /// Wi-Fi presence reports yielded.
    pub wifi: u64,
    /// Empty or whitespace-only lines (ignored, not an error).
    pub blank: u64,
    /// Skipped: longer than [`MAX_LINE`].
    pub too_long: u64,
    /// Skipped: not UTF-8.
    pub not_utf8: u64,
    /// Skipped: not one JSON object.
    pub bad_json: u64,
    /// Skipped: a required field absent.
    pub missing_field: u64,
    /// Skipped: `t` not a finite, representable time.
    pub bad_time: u64,
    /// Skipped: `addr` or `mac` not an address.
    pub bad_addr: u64,
    /// Skipped: a data section not hex.
    pub bad_hex: u64,
    /// Skipped: any other field of the wrong type or out of range.
    pub bad_value: u64,
    /// Skipped: scanner not in the layout.
    pub unknown_scanner: u64,
    /// Skipped: too far back in time.
    pub out_of_order: u64,
    /// Skipped: too far ahead of the lines either side.
    pub implausible: u64,
    /// Times the reader followed the recording's clock back (see
    /// [`RESYNC_AFTER`]).
    pub resyncs: u64,
    /// The first [`ReplayStats::KEEP_FIRST`] skipped lines.
    pub first_bad: Vec<BadLine>,
}

impl ReplayStats {
    /// How many skipped lines are kept in [`ReplayStats::first_bad`].
    pub const KEEP_FIRST: usize = 10;

    /// Lines skipped for any reason.
    #[must_use]
    pub fn skipped(&self) -> u64 {
        self.too_long
            + self.not_utf8
            + self.bad_json
            + self.missing_field
            + self.bad_time
            + self.bad_addr
            + self.bad_hex
            + self.bad_value
            + self.unknown_scanner
            + self.out_of_order
            + self.implausible
    }

    /// Observations yielded.
    #[must_use]
    pub fn observations(&self) -> u64 {
        self.ble + self.wifi
    }

    /// Counts an observation passed on.
    fn count(&mut self, obs: &Observation) {
        match obs {
            Observation::Ble(_) => self.ble += 1,
            Observation::Wifi(_) => self.wifi += 1,
        }
    }

    fn skip(&mut self, line: u64, reason: Reason) {
        let counter = match reason {
            Reason::TooLong => &mut self.too_long,
            Reason::NotUtf8 => &mut self.not_utf8,
            Reason::Json => &mut self.bad_json,
            Reason::Missing(_) => &mut self.missing_field,
            Reason::Invalid(Field::T) => &mut self.bad_time,
            Reason::Invalid(Field::Addr | Field::Mac) => &mut self.bad_addr,
            Reason::Invalid(_) => &mut self.bad_value,
            Reason::BadHex(_) => &mut self.bad_hex,
            Reason::UnknownScanner => &mut self.unknown_scanner,
            Reason::OutOfOrder => &mut self.out_of_order,
            Reason::Implausible => &mut self.implausible,
        };
        *counter += 1;
        if self.first_bad.len() < Self::KEEP_FIRST {
            self.first_bad.push(BadLine { line, reason });
        }
    }
}

/// Parses one recording line (without its newline).
///
/// # Errors
/// The [`Reason`] the line cannot be used.
pub fn parse_line(line: &str, layout: &Layout) -> Result<Observation, Reason> {
    fast_parser::parse(line.as_bytes(), layout).unwrap_or_else(|| parse_general(line, layout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::zones::Scanner;
    use std::io::Read;

    /// The example of `formats/replay.md` on one line. Its `svc` value is
    /// elided there ("00e8..."); filled in with an Eddystone-UID frame.
    const EXAMPLE: &str = r#"{"t": 1763712000.125, "scanner": "door", "addr": "C4:7C:8D:6A:11:02", "rssi": -67, "tx_power": null, "name": null, "mfg": {"76": "0215e2c56db5dffb48d2b060d0f5a71096e000010002c5"}, "svc": {"0000feaa-0000-1000-8000-00805f9b34fb": "00e80102030405060708090aa0a1a2a3a4a5"}, "uuids": ["0000feaa-0000-1000-8000-00805f9b34fb"]}"#;

    /// Scanners `door` (the first) and `shelf`.
    pub(super) fn two_scanners() -> Layout {
        let mut l = Layout::single("S", "door");
        l.scanners.push(Scanner {
            id: "shelf".into(),
            position: (10.0, 0.0),
            rssi_offset: 0.0,
            path_loss_exponent: 2.0,
        });
        l
    }

    fn payload(hex: &str) -> Payload {
        hex::decode(hex).unwrap().into_iter().collect()
    }

    fn example_sighting() -> Sighting {
        let mut s = Sighting::new(
            Timestamp(1_763_712_000_125),
            ScannerIdx(0),
            BdAddr([0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x02]),
            Rssi(-67),
        );
        s.manufacturer_data.push(ManufacturerData {
            company: 76,
            data: payload("0215e2c56db5dffb48d2b060d0f5a71096e000010002c5"),
        });
        s.service_data.push(ServiceData {
            uuid: Uuid128::EDDYSTONE,
            data: payload("00e80102030405060708090aa0a1a2a3a4a5"),
        });
        s.service_uuids.push(Uuid128::EDDYSTONE);
        s
    }

    fn read_all(input: &[u8], layout: &Layout) -> (Vec<Observation>, ReplayStats) {
        let mut r = Reader::new(input, layout);
        let obs = r.by_ref().map(Result::unwrap).collect();
        (obs, r.into_stats())
    }

    #[test]
    fn the_documented_example_parses_to_the_exact_sighting() {
        assert_eq!(
            parse_line(EXAMPLE, &two_scanners()),
            Ok(Observation::Ble(example_sighting()))
        );
        // As printed in the document, with the elision, the line is refused
        // for exactly that section.
        let literal = EXAMPLE.replace("00e80102030405060708090aa0a1a2a3a4a5", "00e8...");
        let err = parse_line(&literal, &two_scanners()).unwrap_err();
        assert_eq!(err, Reason::BadHex(Section::Svc(Uuid128::EDDYSTONE)));
        assert_eq!(
            err.to_string(),
            "bad hex in svc[0000feaa-0000-1000-8000-00805f9b34fb]"
        );
    }

    #[test]
    fn wifi_lines_parse() {
        let l = two_scanners();
        for (word, kind) in [
            ("joined", WifiKind::Joined),
            ("seen", WifiKind::Seen),
            ("left", WifiKind::Left),
        ] {
            let line = format!(
                r#"{{"t": 1763712000.5, "wifi": "{word}", "mac": "aa:bb:cc:dd:ee:0f", "source": "hostapd"}}"#
            );
            assert_eq!(
                parse_line(&line, &l),
                Ok(Observation::Wifi(WifiPresence {
                    at: Timestamp(1_763_712_000_500),
                    source: "hostapd".into(),
                    mac: BdAddr([0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0x0F]),
                    kind,
                }))
            );
        }
    }

    #[test]
    fn minimal_lines_and_nulls_use_the_defaults() {
        let l = Layout::single("S", "local");
        let obs = parse_line(
            r#"{"t":1,"addr":"00:00:00:00:00:01","rssi":-100,"mfg":null,"svc":null,"uuids":null,"scanner":null,"future":[1,{"x":2}]}"#,
            &l,
        );
        let expected = Sighting::new(
            Timestamp(1000),
            ScannerIdx(0),
            BdAddr([0, 0, 0, 0, 0, 1]),
            Rssi(-100),
        );
        assert_eq!(obs, Ok(Observation::Ble(expected)));
        let named = parse_line(
            r#"{"t":1,"addr":"00:00:00:00:00:01","rssi":-1,"name":"Bob \"the\" tag","tx_power":-12}"#,
            &l,
        );
        let Ok(Observation::Ble(s)) = named else {
            panic!("{named:?}")
        };
        assert_eq!(s.name.as_deref(), Some("Bob \"the\" tag"));
        assert_eq!(s.tx_power, Some(-12));
    }

    #[test]
    fn scanner_names_map_through_the_layout() {
        let line =
            |scanner: &str| format!(r#"{{"t":1,{scanner}"addr":"00:00:00:00:00:01","rssi":-60}}"#);
        let scanner_of = |l: &Layout, s: &str| match parse_line(&line(s), l) {
            Ok(Observation::Ble(s)) => Ok(s.scanner),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let one = Layout::single("S", "door");
        // One scanner: whatever the recording calls it, it is that one.
        assert_eq!(scanner_of(&one, ""), Ok(ScannerIdx(0)));
        assert_eq!(
            scanner_of(&one, r#""scanner":"aisle9","#),
            Ok(ScannerIdx(0))
        );
        let two = two_scanners();
        assert_eq!(scanner_of(&two, r#""scanner":"shelf","#), Ok(ScannerIdx(1)));
        assert_eq!(
            scanner_of(&two, r#""scanner":"aisle9","#),
            Err(Reason::UnknownScanner)
        );
        // Absent means "local", which this layout does not have.
        assert_eq!(scanner_of(&two, ""), Err(Reason::UnknownScanner));
        let mut with_local = two.clone();
        with_local.scanners[1].id = "local".into();
        assert_eq!(scanner_of(&with_local, ""), Ok(ScannerIdx(1)));
    }

    #[test]
    fn every_malformed_kind_has_its_reason() {
        let l = two_scanners();
        let ok = r#""scanner":"door","addr":"00:00:00:00:00:01","rssi":-60"#;
        let cases: Vec<(String, Reason)> = vec![
            ("not json".into(), Reason::Json),
            ("[1,2]".into(), Reason::Json),
            ("42".into(), Reason::Json),
            (format!(r#"{{"t":1,{ok}}} trailing"#), Reason::Json),
            (format!(r#"{{"t":1,{ok}"#), Reason::Json),
            (
                r#"{"t":1,"addr":"00:00:00:00:00:01","rs"#.into(),
                Reason::Json,
            ),
            (
                r#"{"addr":"00:00:00:00:00:01","rssi":-60}"#.into(),
                Reason::Missing(Field::T),
            ),
            (r#"{"t":1,"rssi":-60}"#.into(), Reason::Missing(Field::Addr)),
            (
                r#"{"t":1,"addr":"00:00:00:00:00:01"}"#.into(),
                Reason::Missing(Field::Rssi),
            ),
            (
                r#"{"t":1,"wifi":"joined","source":"x"}"#.into(),
                Reason::Missing(Field::Mac),
            ),
            (
                r#"{"t":1,"wifi":"joined","mac":"00:00:00:00:00:01"}"#.into(),
                Reason::Missing(Field::Source),
            ),
            (format!(r#"{{"t":"1",{ok}}}"#), Reason::Invalid(Field::T)),
            (format!(r#"{{"t":null,{ok}}}"#), Reason::Invalid(Field::T)),
            (format!(r#"{{"t":1e400,{ok}}}"#), Reason::Invalid(Field::T)),
            (format!(r#"{{"t":NaN,{ok}}}"#), Reason::Invalid(Field::T)),
            (format!(r#"{{"t":1e300,{ok}}}"#), Reason::Invalid(Field::T)),
            (
                r#"{"t":1,"addr":"00:00:00:00:00","rssi":-60}"#.into(),
                Reason::Invalid(Field::Addr),
            ),
            (
                r#"{"t":1,"addr":7,"rssi":-60}"#.into(),
                Reason::Invalid(Field::Addr),
            ),
            (
                r#"{"t":1,"wifi":"joined","mac":"zz:00:00:00:00:01","source":"x"}"#.into(),
                Reason::Invalid(Field::Mac),
            ),
            (
                r#"{"t":1,"addr":"00:00:00:00:00:01","rssi":-60.5}"#.into(),
                Reason::Invalid(Field::Rssi),
            ),
            (
                r#"{"t":1,"addr":"00:00:00:00:00:01","rssi":-129}"#.into(),
                Reason::Invalid(Field::Rssi),
            ),
            (
                format!(r#"{{"t":1,{ok},"tx_power":300}}"#),
                Reason::Invalid(Field::TxPower),
            ),
            (
                format!(r#"{{"t":1,{ok},"name":5}}"#),
                Reason::Invalid(Field::Name),
            ),
            (
                format!(r#"{{"t":1,{ok},"scanner":5}}"#),
                Reason::Invalid(Field::Scanner),
            ),
            (
                format!(r#"{{"t":1,{ok},"mfg":{{"76":"0215zz"}}}}"#),
                Reason::BadHex(Section::Mfg(76)),
            ),
            (
                format!(r#"{{"t":1,{ok},"mfg":{{"280":"bea"}}}}"#),
                Reason::BadHex(Section::Mfg(280)),
            ),
            (
                format!(r#"{{"t":1,{ok},"mfg":{{"0x4c":"02"}}}}"#),
                Reason::Invalid(Field::Mfg),
            ),
            (
                format!(r#"{{"t":1,{ok},"mfg":{{"65536":"02"}}}}"#),
                Reason::Invalid(Field::Mfg),
            ),
            (
                format!(r#"{{"t":1,{ok},"mfg":["02"]}}"#),
                Reason::Invalid(Field::Mfg),
            ),
            (
                format!(r#"{{"t":1,{ok},"svc":{{"feaa":"00"}}}}"#),
                Reason::Invalid(Field::Svc),
            ),
            (
                format!(r#"{{"t":1,{ok},"uuids":["0000feaa"]}}"#),
                Reason::Invalid(Field::Uuids),
            ),
            (
                r#"{"t":1,"wifi":"gone","mac":"00:00:00:00:00:01","source":"x"}"#.into(),
                Reason::Invalid(Field::Wifi),
            ),
            (
                r#"{"t":1,"wifi":"left","mac":"00:00:00:00:00:01","source":null}"#.into(),
                Reason::Invalid(Field::Source),
            ),
        ];
        for (line, reason) in &cases {
            assert_eq!(parse_line(line, &l).err(), Some(*reason), "{line}");
        }
    }

    #[test]
    fn reader_counts_skips_by_reason_and_line() {
        let l = two_scanners();
        let good = |t: &str| {
            format!(r#"{{"t":{t},"scanner":"door","addr":"00:00:00:00:00:01","rssi":-60}}"#)
        };
        let mut input = Vec::new();
        for line in [
            good("100"),    // 1
            String::new(),  // 2 blank
            "   ".into(),   // 3 blank
            good("99"),     // 4 1 s back: kept
            good("94.999"), // 5 out of order
            good("95"),     // 6 exactly 5 s back: kept
            r#"{"t":101,"scanner":"door","addr":"00:00:00:00:00:01","rssi":-60,"mfg":{"76":"0g"}}"#
                .into(), // 7
            r#"{"t":102,"addr":"C4:7C:8D:6A:11","rssi":-60}"#.into(), // 8
            r#"{"t":103,"wifi":"left","mac":"C4:7C:8D:6A:11:02","source":"hostapd"}"#.into(), // 9
            r#"{"t":104,"scanner":"aisle9","addr":"00:00:00:00:00:01","rssi":-60}"#.into(), // 10
        ] {
            input.extend_from_slice(line.as_bytes());
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(b"{\"t\":105,\xff}\n"); // 11
        input.extend_from_slice(good("106").as_bytes()); // 12, no final newline
        let (obs, stats) = read_all(&input, &l);
        let times: Vec<i64> = obs.iter().map(|o| o.at().0).collect();
        assert_eq!(times, [100_000, 99_000, 95_000, 103_000, 106_000]);
        assert_eq!(
            stats.first_bad,
            [
                BadLine {
                    line: 5,
                    reason: Reason::OutOfOrder
                },
                BadLine {
                    line: 7,
                    reason: Reason::BadHex(Section::Mfg(76))
                },
                BadLine {
                    line: 8,
                    reason: Reason::Invalid(Field::Addr)
                },
                BadLine {
                    line: 10,
                    reason: Reason::UnknownScanner
                },
                BadLine {
                    line: 11,
                    reason: Reason::NotUtf8
                },
            ]
        );
        assert_eq!(stats.first_bad[1].to_string(), "line 7: bad hex in mfg[76]");
        assert_eq!(
            stats.first_bad[2].to_string(),
            "line 8: invalid `addr`",
            "names the field, never the address"
        );
        assert_eq!(
            (stats.lines, stats.ble, stats.wifi, stats.blank),
            (12, 4, 1, 2)
        );
        assert_eq!(
            (
                stats.out_of_order,
                stats.bad_hex,
                stats.bad_addr,
                stats.unknown_scanner,
                stats.not_utf8,
                stats.skipped()
            ),
            (1, 1, 1, 1, 1, 5)
        );
    }

    #[test]
    fn only_the_first_bad_lines_are_kept() {
        let input = "x\n".repeat(25);
        let (obs, stats) = read_all(input.as_bytes(), &two_scanners());
        assert!(obs.is_empty());
        assert_eq!(stats.bad_json, 25);
        assert_eq!(stats.first_bad.len(), ReplayStats::KEEP_FIRST);
        assert_eq!(stats.first_bad[9].line, 10);
    }

    #[test]
    fn one_bogus_future_line_costs_only_itself() {
        let line = |t: i64| {
            format!(
                "{{\"t\":{t},\"scanner\":\"door\",\"addr\":\"00:00:00:00:00:01\",\"rssi\":-60}}\n"
            )
        };
        for at in [0, 50] {
            let mut input = String::new();
            for t in 0..150 {
                if t == at {
                    input.push_str(&line(2_000_000_000));
                }
                input.push_str(&line(1_763_712_000 + t));
            }
            let (obs, stats) = read_all(input.as_bytes(), &two_scanners());
            assert_eq!(obs.len(), 150, "bogus line before line {at}");
            assert_eq!(
                (stats.implausible, stats.out_of_order, stats.resyncs),
                (1, 0, 0)
            );
            let line = u64::try_from(at).unwrap() + 1;
            assert_eq!(
                stats.first_bad,
                [BadLine {
                    line,
                    reason: Reason::Implausible
                }]
            );
            assert_eq!(
                stats.first_bad[0].to_string(),
                format!("line {line}: more than 5 s ahead of the lines either side of it")
            );
        }
    }

    #[test]
    fn overlong_lines_are_skipped_without_losing_the_next() {
        let l = two_scanners();
        let mut input = format!(
            r#"{{"t":1,"scanner":"door","addr":"00:00:00:00:00:01","rssi":-60,"name":"{}"}}"#,
            "x".repeat(MAX_LINE)
        );
        input.push('\n');
        input.push_str(r#"{"t":2,"scanner":"door","addr":"00:00:00:00:00:01","rssi":-60}"#);
        // A tiny buffer, so the skipped line spans many refills.
        let reader = std::io::BufReader::with_capacity(64, input.as_bytes());
        let mut r = Reader::new(reader, &l);
        let obs: Vec<_> = r.by_ref().map(Result::unwrap).collect();
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].at(), Timestamp(2000));
        assert_eq!(r.stats().too_long, 1);
        assert_eq!(r.stats().first_bad[0].line, 1);
    }

    #[test]
    fn lines_straddling_the_buffer_read_the_same() {
        let l = two_scanners();
        let mut input = String::new();
        for i in 0..20 {
            input.push_str(&EXAMPLE.replace("1763712000.125", &format!("1763712000.{i:03}")));
            input.push_str(if i % 3 == 0 { "\r\n" } else { "\n" });
            if i == 7 {
                input.push_str("{bad}\n\n");
            }
        }
        let (whole, whole_stats) = read_all(input.as_bytes(), &l);
        assert_eq!(whole.len(), 20);
        assert_eq!(whole_stats.first_bad[0].line, 9);
        for capacity in [1, 7, 64, 300] {
            let reader = std::io::BufReader::with_capacity(capacity, input.as_bytes());
            let mut r = Reader::new(reader, &l);
            let obs: Vec<_> = r.by_ref().map(Result::unwrap).collect();
            assert_eq!(obs, whole, "capacity {capacity}");
            assert_eq!(r.stats(), &whole_stats, "capacity {capacity}");
        }
    }

    #[test]
    fn an_io_error_ends_the_run() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk gone"))
            }
        }
        let l = two_scanners();
        let mut r = Reader::new(std::io::BufReader::new(Broken), &l);
        assert!(matches!(r.next(), Some(Err(Error::Io(_)))));
        assert!(r.next().is_none());
    }

    #[test]
    fn writer_writes_the_documented_format() {
        let l = two_scanners();
        let mut w = Writer::new(Vec::new(), &l);
        w.write(&Observation::Ble(example_sighting())).unwrap();
        w.write(&Observation::Wifi(WifiPresence {
            at: Timestamp(1_763_712_001_000),
            source: "hostapd".into(),
            mac: BdAddr([0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x02]),
            kind: WifiKind::Joined,
        }))
        .unwrap();
        let text = String::from_utf8(w.into_inner()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"t":1763712000.125,"scanner":"door","addr":"C4:7C:8D:6A:11:02","rssi":-67,"tx_power":null,"name":null,"#,
                r#""mfg":{"76":"0215e2c56db5dffb48d2b060d0f5a71096e000010002c5"},"#,
                r#""svc":{"0000feaa-0000-1000-8000-00805f9b34fb":"00e80102030405060708090aa0a1a2a3a4a5"},"#,
                r#""uuids":["0000feaa-0000-1000-8000-00805f9b34fb"]}"#,
                "\n",
                r#"{"t":1763712001.000,"wifi":"joined","mac":"C4:7C:8D:6A:11:02","source":"hostapd"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn writer_refuses_a_scanner_outside_the_layout() {
        let l = Layout::single("S", "door");
        let mut s = example_sighting();
        s.scanner = ScannerIdx(3);
        let mut w = Writer::new(Vec::new(), &l);
        assert!(matches!(
            w.write(&Observation::Ble(s)),
            Err(Error::UnknownScanner(ScannerIdx(3)))
        ));
        assert!(w.into_inner().is_empty());
    }

    #[test]
    fn record_then_replay_round_trips() {
        let l = two_scanners();
        let mut odd = Sighting::new(
            Timestamp(-1_500),
            ScannerIdx(1),
            BdAddr([0xFF; 6]),
            Rssi(-128),
        );
        odd.tx_power = Some(-127);
        odd.name = Some("Zoë's \"tag\"\n\u{1}".into());
        for (company, hex) in [(76, "1005031c2a7b3e"), (6, ""), (65535, "00ff")] {
            odd.manufacturer_data.push(ManufacturerData {
                company,
                data: payload(hex),
            });
        }
        odd.service_data.push(ServiceData {
            uuid: Uuid128::from_u16(0xFE2C),
            data: payload(&"ab".repeat(40)), // spills the inline payload
        });
        odd.service_uuids
            .extend([Uuid128::from_u16(0x180D), Uuid128(u128::MAX)]);
        let mut later = example_sighting();
        later.at = Timestamp(1_763_712_000_001);
        let all = vec![
            Observation::Ble(odd),
            Observation::Ble(later),
            Observation::Wifi(WifiPresence {
                at: Timestamp(1_763_712_000_002),
                source: "hostapd".into(),
                mac: BdAddr([1, 2, 3, 4, 5, 6]),
                kind: WifiKind::Left,
            }),
        ];
        let mut w = Writer::new(Vec::new(), &l);
        for o in &all {
            w.write(o).unwrap();
        }
        let bytes = w.into_inner();
        // The big step forward is fine; only steps back are checked.
        let (back, stats) = read_all(&bytes, &l);
        assert_eq!(stats.skipped(), 0, "{:?}", stats.first_bad);
        assert_eq!(back, all);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let (obs, stats) = read_all(&bytes, &two_scanners());
            proptest::prop_assert_eq!(obs.len() as u64, stats.observations());
            proptest::prop_assert_eq!(stats.lines, stats.observations() + stats.blank + stats.skipped());
        }

        #[test]
        fn fast_parsers_agree_with_core(s in "[0-9a-fA-F:-]{0,40}", t in "[0-9a-fA-F:-]{17}", u in "[0-9a-fA-FxX-]{36}", c in "[0-9+ -]{0,7}") {
            for x in [&s, &c] {
                let digits = !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
                proptest::prop_assert_eq!(parse_company(x), x.parse().ok().filter(|_| digits));
            }
            for x in [&s, &t] {
                proptest::prop_assert_eq!(parse_addr(x), BdAddr::parse(x));
            }
            for x in [&s, &u] {
                proptest::prop_assert_eq!(parse_uuid(x), Uuid128::parse(x));
            }
            let mut hex = Payload::new();
            let ok = s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit());
            if ok {
                hex = hex::decode(&s).unwrap().into_iter().collect();
            }
            proptest::prop_assert_eq!(decode_hex(s.as_bytes()), ok.then_some(hex));
        }

        #[test]
        fn find_byte_finds_the_first(bytes in proptest::collection::vec(0u8..4, 0..40), needle in 0u8..4) {
            proptest::prop_assert_eq!(find_byte(&bytes, needle), bytes.iter().position(|&b| b == needle));
        }

        #[test]
        fn damaged_lines_never_panic(cut in 0usize..400, at in 0usize..400, byte in proptest::prelude::any::<u8>()) {
            let mut line = EXAMPLE.as_bytes().to_vec();
            let at = at % line.len();
            line[at] = byte;
            line.truncate(cut.max(1));
            let (obs, stats) = read_all(&line, &two_scanners());
            proptest::prop_assert_eq!(stats.lines, obs.len() as u64 + stats.blank + stats.skipped());
        }
    }
}
