//! Reading a recording: [`Reader`] yields the observations of a
//! `BufRead` in file order, parsing each line where it lies in the buffer
//! (the fast parser first, learning from it where the line ends), keeping
//! the time-order rules and counting every skipped line in
//! [`ReplayStats`].

use std::collections::VecDeque;
use std::io::{BufRead, Read};

use super::order::Order;
use super::*;

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
pub(super) struct Lines<'l> {
    layout: &'l Layout,
    /// Reused for every line.
    fields: Fields,
    /// The time-order rules.
    order: Order,
    /// Lines that passed them, not yet yielded (a held line and the one
    /// that released it come out together).
    pub(super) ready: VecDeque<Observation>,
    pub(super) stats: ReplayStats,
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
            if let Some(obs) = self.lines.ready.pop_front() {
                return Ok(Some(obs));
            }
            let chunk = match self.inner.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                self.lines.finish();
                return Ok(self.lines.ready.pop_front());
            }
            let window = &chunk[..chunk.len().min(MAX_LINE + 1)];
            // The common case: a line as `nearcast record` writes it, read
            // where it lies; the parse itself finds where it ends.
            if let Some((parsed, len)) = fast_parser::parse_prefix(window, self.lines.layout) {
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
    pub(super) fn new(layout: &'l Layout) -> Lines<'l> {
        Lines {
            layout,
            fields: Fields::default(),
            order: Order::default(),
            ready: VecDeque::new(),
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
        let parsed = match fast_parser::parse(bytes, self.layout) {
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

    /// Counts one parsed line: skipped for its reason, or put to the
    /// time-order rules; the next observation they pass on, if any.
    pub(super) fn parsed(&mut self, parsed: Result<Observation, Reason>) -> Option<Observation> {
        self.stats.lines += 1;
        let line_no = self.stats.lines;
        match parsed {
            Ok(obs) => self
                .order
                .push(obs, line_no, &mut self.ready, &mut self.stats),
            Err(reason) => self.stats.skip(line_no, reason),
        }
        self.ready.pop_front()
    }

    /// The end of the input: a line still held goes on.
    pub(super) fn finish(&mut self) {
        self.order.finish(&mut self.ready, &mut self.stats);
    }

    pub(super) fn too_long(&mut self) {
        self.stats.lines += 1;
        self.stats.skip(self.stats.lines, Reason::TooLong);
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
pub(super) fn find_newline(bytes: &[u8]) -> Option<usize> {
    find_byte(bytes, b'\n')
}

/// The index of the first `needle`, a word at a time.
pub(super) fn find_byte(bytes: &[u8], needle: u8) -> Option<usize> {
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
