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
//! hand-written fast path (`replay/fast.rs`); any other line, and any line
//! the fast path is not certain of, goes to a serde_json visitor, which alone
//! decides what is wrong with a line. Both give the same result for every
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
//! Time order: a line more than [`MAX_BACKWARDS`] older than the newest line
//! so far is skipped as out of order (a clock step or a bad line); smaller
//! steps back are passed on unchanged, because merging several scanners'
//! reports reorders them slightly. If [`RESYNC_AFTER`] lines in a row are out
//! of order, the recording's clock really did step back (a box without a
//! real-time clock syncing late, or one bogus future line before), and the
//! reader follows the new timeline from that line on.

mod fast;

use std::fmt;
use std::io::{BufRead, Read, Write};
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

use super::Error;
use crate::core::types::{
    BdAddr, ManufacturerData, Observation, Payload, Rssi, ScannerIdx, ServiceData, Sighting,
    Timestamp, Uuid128, WifiKind, WifiPresence, hex_nibble,
};
use crate::core::zones::Layout;

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
    }

    /// Observations yielded.
    #[must_use]
    pub fn observations(&self) -> u64 {
        self.ble + self.wifi
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
        };
        *counter += 1;
        if self.first_bad.len() < Self::KEEP_FIRST {
            self.first_bad.push(BadLine { line, reason });
        }
    }
}

/// Reads a recording line by line, yielding its observations in file order.
///
/// Yields `Err` only for an I/O error, after which it yields nothing more.
/// Malformed lines are skipped and counted in [`Reader::stats`].
///
/// A line that fits in the `BufRead`'s buffer is parsed where it lies, without
/// being copied; give it a generous buffer (`BufReader::with_capacity(1 << 16,
/// file)`) so that few lines straddle a refill.
pub struct Reader<'l, R> {
    inner: R,
    lines: Lines<'l>,
    /// For lines that straddle the reader's buffer.
    buf: Vec<u8>,
    failed: bool,
}

/// Everything but the input: what turns line bytes into observations.
struct Lines<'l> {
    layout: &'l Layout,
    /// Reused for every line.
    fields: Fields,
    newest: Option<Timestamp>,
    behind: u32,
    stats: ReplayStats,
}

impl<'l, R: BufRead> Reader<'l, R> {
    /// A reader over `inner`, mapping scanner names through `layout`.
    #[must_use]
    pub fn new(inner: R, layout: &'l Layout) -> Reader<'l, R> {
        Reader {
            inner,
            lines: Lines::new(layout),
            buf: Vec::new(),
            failed: false,
        }
    }

    /// What has been read so far.
    #[must_use]
    pub fn stats(&self) -> &ReplayStats {
        &self.lines.stats
    }

    /// The final counts.
    #[must_use]
    pub fn into_stats(self) -> ReplayStats {
        self.lines.stats
    }

    /// The next observation; `Ok(None)` at the end of input.
    fn read(&mut self) -> std::io::Result<Option<Observation>> {
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Ok(None);
            }
            let window = &chunk[..chunk.len().min(MAX_LINE + 1)];
            // The common case: a line as `nearcast record` writes it, read
            // where it lies; the parse itself finds where it ends.
            if let Some((parsed, len)) = fast::parse_prefix(window, self.lines.layout) {
                let newline = match &window[len..] {
                    [b'\n', ..] => Some(1),
                    [b'\r', b'\n', ..] => Some(2),
                    _ => None,
                };
                if let Some(newline) = newline {
                    let obs = self.lines.parsed(parsed);
                    self.inner.consume(len + newline);
                    if obs.is_some() {
                        return Ok(obs);
                    }
                    continue;
                }
            }
            if let Some(end) = find_newline(window) {
                // Any other line that fits: parse it where it lies.
                let obs = self.lines.line(&chunk[..end]);
                self.inner.consume(end + 1);
                if obs.is_some() {
                    return Ok(obs);
                }
                continue;
            }
            // The line straddles the buffer, or is too long: copy it.
            self.buf.clear();
            let limit = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
            (&mut self.inner)
                .take(limit)
                .read_until(b'\n', &mut self.buf)?;
            let obs = match self.buf.as_slice() {
                [line @ .., b'\n'] => self.lines.line(line),
                line if line.len() <= MAX_LINE => self.lines.line(line),
                _ => {
                    self.skip_rest_of_line()?;
                    self.lines.too_long();
                    None
                }
            };
            if obs.is_some() {
                return Ok(obs);
            }
        }
    }

    /// Drops input up to and including the next newline, without buffering it.
    fn skip_rest_of_line(&mut self) -> std::io::Result<()> {
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                return Ok(());
            }
            if let Some(i) = find_newline(chunk) {
                self.inner.consume(i + 1);
                return Ok(());
            }
            let len = chunk.len();
            self.inner.consume(len);
        }
    }
}

impl<'l> Lines<'l> {
    fn new(layout: &'l Layout) -> Lines<'l> {
        Lines {
            layout,
            fields: Fields::default(),
            newest: None,
            behind: 0,
            stats: ReplayStats::default(),
        }
    }

    /// Counts one line (without its newline) and turns it into an
    /// observation, or counts why not.
    fn line(&mut self, mut bytes: &[u8]) -> Option<Observation> {
        if let [rest @ .., b'\r'] = bytes {
            bytes = rest;
        }
        if self.stats.lines == 0 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        if bytes.trim_ascii_start().is_empty() {
            self.stats.lines += 1;
            self.stats.blank += 1;
            return None;
        }
        let parsed = match fast::parse(bytes, self.layout) {
            Some(parsed) => parsed,
            // One UTF-8 check of the whole line is cheaper than serde_json's
            // `from_slice` checking each string on its own.
            None => std::str::from_utf8(bytes)
                .map_err(|_| Reason::NotUtf8)
                .and_then(|line| parse_into(line, self.layout, &mut self.fields))
                .and_then(|()| self.fields.finish(self.layout)),
        };
        self.parsed(parsed)
    }

    /// Counts one parsed line: skipped for its reason or for its time, or
    /// passed on.
    fn parsed(&mut self, parsed: Result<Observation, Reason>) -> Option<Observation> {
        self.stats.lines += 1;
        let line_no = self.stats.lines;
        let obs = match parsed {
            Ok(obs) => obs,
            Err(reason) => {
                self.stats.skip(line_no, reason);
                return None;
            }
        };
        if !self.in_order(obs.at()) {
            self.stats.skip(line_no, Reason::OutOfOrder);
            return None;
        }
        match obs {
            Observation::Ble(_) => self.stats.ble += 1,
            Observation::Wifi(_) => self.stats.wifi += 1,
        }
        Some(obs)
    }

    fn too_long(&mut self) {
        self.stats.lines += 1;
        self.stats.skip(self.stats.lines, Reason::TooLong);
    }

    /// Checks `at` against the newest time so far; `false` to skip the line.
    fn in_order(&mut self, at: Timestamp) -> bool {
        let Some(newest) = self.newest else {
            self.newest = Some(at);
            return true;
        };
        if at < newest.saturating_sub(MAX_BACKWARDS) {
            self.behind += 1;
            if self.behind < RESYNC_AFTER {
                return false;
            }
            self.stats.resyncs += 1;
            self.newest = Some(at);
        } else {
            self.newest = Some(newest.max(at));
        }
        self.behind = 0;
        true
    }
}

impl<R: BufRead> Iterator for Reader<'_, R> {
    type Item = Result<Observation, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.read() {
            Ok(obs) => obs.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(Error::Io(e)))
            }
        }
    }
}

/// The index of the first `\n`.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    find_byte(bytes, b'\n')
}

/// The index of the first `needle`, a word at a time.
fn find_byte(bytes: &[u8], needle: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(needle);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // The high bit of each byte of `x` that is zero (a match) is set;
        // a borrow can only set bits above the first match, so the lowest
        // set bit is exact.
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| at + i)
}

/// Parses one recording line (without its newline).
///
/// # Errors
/// The [`Reason`] the line cannot be used.
pub fn parse_line(line: &str, layout: &Layout) -> Result<Observation, Reason> {
    fast::parse(line.as_bytes(), layout).unwrap_or_else(|| parse_general(line, layout))
}

/// [`parse_line`] without the fast path: any line, by serde_json.
fn parse_general(line: &str, layout: &Layout) -> Result<Observation, Reason> {
    let mut fields = Fields::default();
    parse_into(line, layout, &mut fields)?;
    fields.finish(layout)
}

/// Parses `line` into `fields`, for [`Fields::finish`].
fn parse_into(line: &str, layout: &Layout, fields: &mut Fields) -> Result<(), Reason> {
    let mut ctx = Ctx::default();
    let mut de = serde_json::Deserializer::from_str(line);
    LineSeed {
        ctx: &mut ctx,
        fields,
        layout,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| {
        ctx.fail
            .or_else(|| ctx.field.filter(|_| !e.is_eof()).map(Reason::Invalid))
            .unwrap_or(Reason::Json)
    })
}

/// Writes observations as recording lines, one `write_all` per line.
/// Give it a buffered writer.
pub struct Writer<'l, W> {
    inner: W,
    layout: &'l Layout,
    line: Vec<u8>,
}

impl<'l, W: Write> Writer<'l, W> {
    /// A writer into `inner`, naming scanners after `layout`.
    #[must_use]
    pub fn new(inner: W, layout: &'l Layout) -> Writer<'l, W> {
        Writer {
            inner,
            layout,
            line: Vec::with_capacity(512),
        }
    }

    /// Writes one observation as one line.
    ///
    /// # Errors
    /// [`Error::UnknownScanner`] if the sighting's scanner is not in the
    /// layout (nothing is written), or [`Error::Io`].
    pub fn write(&mut self, obs: &Observation) -> Result<(), Error> {
        self.line.clear();
        format_line(obs, self.layout, &mut self.line)?;
        self.inner.write_all(&self.line)?;
        Ok(())
    }

    /// Flushes the underlying writer.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn flush(&mut self) -> Result<(), Error> {
        self.inner.flush()?;
        Ok(())
    }

    /// The underlying writer (not flushed).
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Appends `obs` to `out` as one recording line, newline included.
///
/// # Errors
/// [`Error::UnknownScanner`] if the sighting's scanner is not in `layout`;
/// `out` is then unchanged.
pub fn format_line(obs: &Observation, layout: &Layout, out: &mut Vec<u8>) -> Result<(), Error> {
    match obs {
        Observation::Ble(s) => {
            let scanner = layout
                .scanners
                .get(usize::from(s.scanner.0))
                .ok_or(Error::UnknownScanner(s.scanner))?;
            out.extend_from_slice(b"{\"t\":");
            push_time(out, s.at);
            out.extend_from_slice(b",\"scanner\":");
            push_str(out, &scanner.id)?;
            out.extend_from_slice(b",\"addr\":\"");
            push_addr(out, s.addr);
            write!(out, "\",\"rssi\":{},\"tx_power\":", s.rssi.0)?;
            match s.tx_power {
                Some(p) => write!(out, "{p}")?,
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"name\":");
            match &s.name {
                Some(name) => push_str(out, name)?,
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"mfg\":{");
            for (i, m) in s.manufacturer_data.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write!(out, "\"{}\":\"", m.company)?;
                push_hex(out, &m.data);
                out.push(b'"');
            }
            out.extend_from_slice(b"},\"svc\":{");
            for (i, sd) in s.service_data.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write!(out, "\"{}\":\"", sd.uuid)?;
                push_hex(out, &sd.data);
                out.push(b'"');
            }
            out.extend_from_slice(b"},\"uuids\":[");
            for (i, u) in s.service_uuids.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write!(out, "\"{u}\"")?;
            }
            out.extend_from_slice(b"]}\n");
        }
        Observation::Wifi(w) => {
            out.extend_from_slice(b"{\"t\":");
            push_time(out, w.at);
            out.extend_from_slice(match w.kind {
                WifiKind::Joined => b",\"wifi\":\"joined\",\"mac\":\"",
                WifiKind::Seen => b",\"wifi\":\"seen\",\"mac\":\"",
                WifiKind::Left => b",\"wifi\":\"left\",\"mac\":\"",
            });
            push_addr(out, w.mac);
            out.extend_from_slice(b"\",\"source\":");
            push_str(out, &w.source)?;
            out.extend_from_slice(b"}\n");
        }
    }
    Ok(())
}

/// Fractional Unix seconds with exactly three decimals: the millisecond is
/// the recording's resolution, so a written line reads back to the same
/// [`Timestamp`].
fn push_time(out: &mut Vec<u8>, t: Timestamp) {
    let ms = t.0.unsigned_abs();
    let sign = if t.0 < 0 { "-" } else { "" };
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{sign}{}.{:03}", ms / 1000, ms % 1000);
}

fn push_str(out: &mut Vec<u8>, s: &str) -> Result<(), Error> {
    serde_json::to_writer(&mut *out, s).map_err(std::io::Error::from)?;
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xF)]);
    }
}

fn push_addr(out: &mut Vec<u8>, addr: BdAddr) {
    for (i, &b) in addr.0.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        out.push(HEX_UPPER[usize::from(b >> 4)]);
        out.push(HEX_UPPER[usize::from(b & 0xF)]);
    }
}

/// Each byte's value as a hex digit, or [`NOT_HEX`].
const HEX_VALUE: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation)]
        if let Some(v) = hex_nibble(i as u8) {
            table[i] = v;
        }
        i += 1;
    }
    table
};
const NOT_HEX: u8 = 0x80;

/// Hex-decodes `s`; `None` on an odd length or a non-hex digit.
fn decode_hex(s: &[u8]) -> Option<Payload> {
    if s.len() % 2 != 0 {
        return None;
    }
    let mut bytes = [0u8; 28];
    let mut out = Payload::new();
    // Whole inline-sized blocks on the stack, then one copy each: the
    // loop has no capacity checks, and validity is checked once per block.
    for block in s.chunks(2 * bytes.len()) {
        let mut seen = 0u8;
        let n = block.len() / 2;
        for (byte, pair) in bytes.iter_mut().zip(block.chunks_exact(2)) {
            let (hi, lo) = (
                HEX_VALUE[usize::from(pair[0])],
                HEX_VALUE[usize::from(pair[1])],
            );
            seen |= hi | lo;
            *byte = (hi << 4) | (lo & 0x0F);
        }
        if seen & NOT_HEX != 0 {
            return None;
        }
        out.extend_from_slice(&bytes[..n]);
    }
    Some(out)
}

/// [`Uuid128::parse`] with a fast path for the canonical 36-character form,
/// which every service UUID in a recording has.
fn parse_uuid(s: &str) -> Option<Uuid128> {
    // Malformed in the canonical shape is malformed in any.
    canonical_uuid(s.as_bytes()).or_else(|| Uuid128::parse(s))
}

/// A UUID in the canonical 36-character form only, by table; `None` for
/// any other form, which [`Uuid128::parse`] may still accept.
fn canonical_uuid(b: &[u8]) -> Option<Uuid128> {
    /// Where each byte's two digits start: 8-4-4-4-12 digits.
    const PAIRS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let b: &[u8; 36] = b.try_into().ok()?;
    if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut seen = 0u8;
    for (byte, &at) in out.iter_mut().zip(&PAIRS) {
        let (hi, lo) = (
            HEX_VALUE[usize::from(b[at])],
            HEX_VALUE[usize::from(b[at + 1])],
        );
        seen |= hi | lo;
        *byte = (hi << 4) | (lo & 0x0F);
    }
    (seen & NOT_HEX == 0).then_some(Uuid128(u128::from_be_bytes(out)))
}

/// [`BdAddr::parse`] by table, as every sighting has an address.
fn parse_addr(s: &str) -> Option<BdAddr> {
    addr_from_bytes(s.as_bytes())
}

/// [`parse_addr`] of the bytes; anything but hex digits and separators
/// fails, so a string that needed unescaping never passes.
fn addr_from_bytes(b: &[u8]) -> Option<BdAddr> {
    if b.len() != 17 {
        return None;
    }
    let mut out = [0u8; 6];
    let mut seen = 0u8;
    for (i, byte) in out.iter_mut().enumerate() {
        let at = i * 3;
        if i > 0 && !matches!(b[at - 1], b':' | b'-') {
            return None;
        }
        let (hi, lo) = (
            HEX_VALUE[usize::from(b[at])],
            HEX_VALUE[usize::from(b[at + 1])],
        );
        seen |= hi | lo;
        *byte = (hi << 4) | (lo & 0x0F);
    }
    (seen & NOT_HEX == 0).then_some(BdAddr(out))
}

// ---------------------------------------------------------------------------
// Deserialization. A hand-written visitor rather than a derived struct: it
// decodes hex and addresses in place (no intermediate `String`s), resolves the
// scanner while the name is still borrowed from the line, and knows which
// field failed, which the CLI reports.

/// Where parsing failed, for the [`Reason`].
#[derive(Default)]
struct Ctx {
    /// A precise reason set by the failing visitor.
    fail: Option<Reason>,
    /// The field whose value is being parsed; an error inside it is
    /// [`Reason::Invalid`] of it.
    field: Option<Field>,
}

fn fail<E: de::Error>(ctx: &mut Ctx, reason: Reason) -> E {
    ctx.fail = Some(reason);
    E::custom("skipped")
}

#[derive(Clone, Copy, serde::Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    T,
    Scanner,
    Addr,
    Rssi,
    TxPower,
    Name,
    Mfg,
    Svc,
    Uuids,
    Wifi,
    Mac,
    Source,
    #[serde(other)]
    Other,
}

impl Key {
    fn field(self) -> Option<Field> {
        Some(match self {
            Key::T => Field::T,
            Key::Scanner => Field::Scanner,
            Key::Addr => Field::Addr,
            Key::Rssi => Field::Rssi,
            Key::TxPower => Field::TxPower,
            Key::Name => Field::Name,
            Key::Mfg => Field::Mfg,
            Key::Svc => Field::Svc,
            Key::Uuids => Field::Uuids,
            Key::Wifi => Field::Wifi,
            Key::Mac => Field::Mac,
            Key::Source => Field::Source,
            Key::Other => return None,
        })
    }
}

/// The scanner a line names, resolved against the layout.
#[derive(Clone, Copy, Default)]
enum ScannerRef {
    /// `scanner` absent or null.
    #[default]
    Default,
    /// Resolved (possibly to the only scanner).
    Known(ScannerIdx),
    /// Not in a layout with several scanners.
    Unknown,
}

/// The layout's scanner for `name`: by name, else the only one there is.
fn resolve_scanner(layout: &Layout, name: &str) -> Option<ScannerIdx> {
    layout
        .scanner_index(name)
        .or_else(|| (layout.scanners.len() == 1).then_some(ScannerIdx(0)))
}

/// A line's fields as parsed, before the required ones are checked.
#[derive(Default)]
struct Fields {
    t: Option<Timestamp>,
    scanner: ScannerRef,
    addr: Option<BdAddr>,
    rssi: Option<Rssi>,
    tx_power: Option<i8>,
    name: Option<Box<str>>,
    mfg: SmallVec<[ManufacturerData; 1]>,
    svc: SmallVec<[ServiceData; 1]>,
    uuids: SmallVec<[Uuid128; 1]>,
    wifi: Option<WifiKind>,
    mac: Option<BdAddr>,
    source: Option<Box<str>>,
}

impl Fields {
    /// The observation, once the whole object has been read: a line with
    /// `wifi` is a Wi-Fi report, any other a BLE sighting.
    /// Leaves `self` ready for the next line.
    fn finish(&mut self, layout: &Layout) -> Result<Observation, Reason> {
        let at = self.t.ok_or(Reason::Missing(Field::T))?;
        if let Some(kind) = self.wifi {
            return Ok(Observation::Wifi(WifiPresence {
                at,
                source: self.source.take().ok_or(Reason::Missing(Field::Source))?,
                mac: self.mac.ok_or(Reason::Missing(Field::Mac))?,
                kind,
            }));
        }
        let addr = self.addr.ok_or(Reason::Missing(Field::Addr))?;
        let rssi = self.rssi.ok_or(Reason::Missing(Field::Rssi))?;
        let scanner = match self.scanner {
            ScannerRef::Known(idx) => Some(idx),
            ScannerRef::Default => resolve_scanner(layout, DEFAULT_SCANNER),
            ScannerRef::Unknown => None,
        }
        .ok_or(Reason::UnknownScanner)?;
        Ok(Observation::Ble(Sighting {
            at,
            scanner,
            addr,
            rssi,
            tx_power: self.tx_power,
            name: self.name.take(),
            manufacturer_data: std::mem::take(&mut self.mfg),
            service_data: std::mem::take(&mut self.svc),
            service_uuids: std::mem::take(&mut self.uuids),
        }))
    }

    /// Forgets the previous line, keeping any spilled capacity.
    fn clear(&mut self) {
        self.t = None;
        self.scanner = ScannerRef::Default;
        self.addr = None;
        self.rssi = None;
        self.tx_power = None;
        self.name = None;
        self.mfg.clear();
        self.svc.clear();
        self.uuids.clear();
        self.wifi = None;
        self.mac = None;
        self.source = None;
    }
}

/// Parses one line into `fields`, in place: a sighting is a few hundred
/// bytes, and moving it out through serde's nested `Result`s each time costs
/// more than the copying avoided elsewhere. A value that is wrong in itself
/// fails the parse at once (recording why in the `Ctx`); what can only be
/// judged once the object is complete is left to [`Fields::finish`], so that
/// a syntax error after it still counts as [`Reason::Json`].
struct LineSeed<'c, 'f, 'l> {
    ctx: &'c mut Ctx,
    fields: &'f mut Fields,
    layout: &'l Layout,
}

impl<'de> DeserializeSeed<'de> for LineSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a recording line object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let l = self.fields;
        l.clear();
        while let Some(key) = map.next_key::<Key>()? {
            ctx.field = key.field();
            match key {
                Key::T => {
                    let secs = map.next_value::<f64>()?;
                    let at = Timestamp::from_secs_f64(secs)
                        .ok_or_else(|| fail(ctx, Reason::Invalid(Field::T)))?;
                    l.t = Some(at);
                }
                Key::Scanner => l.scanner = map.next_value_seed(ScannerSeed(self.layout))?,
                Key::Addr => l.addr = Some(map.next_value_seed(ADDR)?),
                Key::Rssi => {
                    let v = map.next_value::<i64>()?;
                    let v = i8::try_from(v).map_err(|_| fail(ctx, Reason::Invalid(Field::Rssi)))?;
                    l.rssi = Some(Rssi(i16::from(v)));
                }
                Key::TxPower => {
                    l.tx_power = match map.next_value::<Option<i64>>()? {
                        None => None,
                        Some(v) => Some(
                            i8::try_from(v)
                                .map_err(|_| fail(ctx, Reason::Invalid(Field::TxPower)))?,
                        ),
                    };
                }
                Key::Name => l.name = map.next_value_seed(StrSeed { nullable: true })?,
                Key::Mfg => map.next_value_seed(MfgSeed {
                    ctx: &mut *ctx,
                    out: &mut l.mfg,
                })?,
                Key::Svc => map.next_value_seed(SvcSeed {
                    ctx: &mut *ctx,
                    out: &mut l.svc,
                })?,
                Key::Uuids => map.next_value_seed(UuidsSeed(&mut l.uuids))?,
                Key::Wifi => l.wifi = Some(map.next_value_seed(WIFI_KIND)?),
                Key::Mac => l.mac = Some(map.next_value_seed(ADDR)?),
                Key::Source => l.source = map.next_value_seed(StrSeed { nullable: false })?,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            ctx.field = None;
        }
        Ok(())
    }
}

struct ScannerSeed<'l>(&'l Layout);

impl<'de> DeserializeSeed<'de> for ScannerSeed<'_> {
    type Value = ScannerRef;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ScannerRef, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for ScannerSeed<'_> {
    type Value = ScannerRef;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scanner name or null")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<ScannerRef, E> {
        Ok(resolve_scanner(self.0, name).map_or(ScannerRef::Unknown, ScannerRef::Known))
    }

    fn visit_unit<E: de::Error>(self) -> Result<ScannerRef, E> {
        Ok(ScannerRef::Default)
    }
}

/// A string value parsed by a function; `None` from it is an error. The
/// error never quotes the value: it may be a bystander's address.
struct ParseStr<T> {
    parse: fn(&str) -> Option<T>,
    what: &'static str,
}

impl<'de, T> DeserializeSeed<'de> for ParseStr<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

impl<T> Visitor<'_> for ParseStr<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        (self.parse)(s).ok_or_else(|| E::custom(self.what))
    }
}

const ADDR: ParseStr<BdAddr> = ParseStr {
    parse: parse_addr,
    what: "an address AA:BB:CC:DD:EE:FF",
};

const UUID: ParseStr<Uuid128> = ParseStr {
    parse: parse_uuid,
    what: "a 128-bit UUID",
};

const COMPANY: ParseStr<u16> = ParseStr {
    parse: parse_company,
    what: "a decimal company id",
};

const WIFI_KIND: ParseStr<WifiKind> = ParseStr {
    parse: parse_wifi_kind,
    what: "\"joined\", \"seen\" or \"left\"",
};

fn parse_company(s: &str) -> Option<u16> {
    company_from_bytes(s.as_bytes())
}

/// Decimal digits only (leading zeros allowed), within `u16`.
fn company_from_bytes(b: &[u8]) -> Option<u16> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u16, |v, &c| {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v.checked_mul(10)?.checked_add(u16::from(d))
    })
}

fn parse_wifi_kind(s: &str) -> Option<WifiKind> {
    wifi_kind_from_bytes(s.as_bytes())
}

fn wifi_kind_from_bytes(b: &[u8]) -> Option<WifiKind> {
    match b {
        b"joined" => Some(WifiKind::Joined),
        b"seen" => Some(WifiKind::Seen),
        b"left" => Some(WifiKind::Left),
        _ => None,
    }
}

/// A string field; `nullable` accepts `null` as `None`.
struct StrSeed {
    nullable: bool,
}

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = Option<Box<str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for StrSeed {
    type Value = Option<Box<str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Some(Box::from(s)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        if self.nullable {
            Ok(None)
        } else {
            Err(E::custom("null"))
        }
    }
}

/// The `mfg` object: decimal company id → hex.
struct MfgSeed<'c, 'o> {
    ctx: &'c mut Ctx,
    out: &'o mut SmallVec<[ManufacturerData; 1]>,
}

impl<'de> DeserializeSeed<'de> for MfgSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MfgSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of company id to hex")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(company) = map.next_key_seed(COMPANY)? {
            let data = map.next_value_seed(HexSeed {
                ctx: &mut *self.ctx,
                section: Section::Mfg(company),
            })?;
            self.out.push(ManufacturerData { company, data });
        }
        Ok(())
    }
}

/// The `svc` object: service UUID → hex.
struct SvcSeed<'c, 'o> {
    ctx: &'c mut Ctx,
    out: &'o mut SmallVec<[ServiceData; 1]>,
}

impl<'de> DeserializeSeed<'de> for SvcSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SvcSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of service UUID to hex")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(uuid) = map.next_key_seed(UUID)? {
            let data = map.next_value_seed(HexSeed {
                ctx: &mut *self.ctx,
                section: Section::Svc(uuid),
            })?;
            self.out.push(ServiceData { uuid, data });
        }
        Ok(())
    }
}

/// The `uuids` array.
struct UuidsSeed<'o>(&'o mut SmallVec<[Uuid128; 1]>);

impl<'de> DeserializeSeed<'de> for UuidsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UuidsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of UUIDs")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(uuid) = seq.next_element_seed(UUID)? {
            self.0.push(uuid);
        }
        Ok(())
    }
}

/// A hex value, decoded straight into a [`Payload`].
struct HexSeed<'c> {
    ctx: &'c mut Ctx,
    section: Section,
}

impl<'de> DeserializeSeed<'de> for HexSeed<'_> {
    type Value = Payload;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Payload, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for HexSeed<'_> {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a hex string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Payload, E> {
        decode_hex(s.as_bytes()).ok_or_else(|| fail(self.ctx, Reason::BadHex(self.section)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::zones::Scanner;

    /// The example of `formats/replay.md` on one line. Its `svc` value is
    /// elided there ("00e8..."); filled in with an Eddystone-UID frame.
    const EXAMPLE: &str = r#"{"t": 1763712000.125, "scanner": "door", "addr": "C4:7C:8D:6A:11:02", "rssi": -67, "tx_power": null, "name": null, "mfg": {"76": "0215e2c56db5dffb48d2b060d0f5a71096e000010002c5"}, "svc": {"0000feaa-0000-1000-8000-00805f9b34fb": "00e80102030405060708090aa0a1a2a3a4a5"}, "uuids": ["0000feaa-0000-1000-8000-00805f9b34fb"]}"#;

    fn two_scanners() -> Layout {
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
    fn a_clock_step_back_is_followed_after_enough_lines() {
        let line = |t: i64| {
            format!(
                "{{\"t\":{t},\"scanner\":\"door\",\"addr\":\"00:00:00:00:00:01\",\"rssi\":-60}}\n"
            )
        };
        let mut input = line(2_000_000_000); // one bogus future line
        for t in 0..150 {
            input.push_str(&line(1_763_712_000 + t));
        }
        let (obs, stats) = read_all(input.as_bytes(), &two_scanners());
        let resync = usize::try_from(RESYNC_AFTER).unwrap();
        assert_eq!(stats.out_of_order, u64::from(RESYNC_AFTER) - 1);
        assert_eq!(stats.resyncs, 1);
        assert_eq!(obs.len(), 1 + 150 - (resync - 1));
        assert_eq!(obs[1].at(), Timestamp::from_secs(1_763_712_000 + 99));
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
