//! Writing a recording: [`Writer`] and [`format_line`], the one shape
//! `nearcast record` writes (and the fast parser reads back).

use std::io::Write;

use super::*;

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
            let mfg = s.manufacturer_data.iter();
            push_sections(out, mfg.map(|m| (m.company, &m.data[..])))?;
            out.extend_from_slice(b"},\"svc\":{");
            let svc = s.service_data.iter();
            push_sections(out, svc.map(|sd| (sd.uuid, &sd.data[..])))?;
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
pub(super) fn push_time(out: &mut Vec<u8>, t: Timestamp) {
    let ms = t.0.unsigned_abs();
    let sign = if t.0 < 0 { "-" } else { "" };
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{sign}{}.{:03}", ms / 1000, ms % 1000);
}

pub(super) fn push_str(out: &mut Vec<u8>, s: &str) -> Result<(), Error> {
    serde_json::to_writer(&mut *out, s).map_err(std::io::Error::from)?;
    Ok(())
}

/// A data section's entries, `"key":"hex"`, separated by commas.
fn push_sections<'a, K: std::fmt::Display>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = (K, &'a [u8])>,
) -> Result<(), Error> {
    for (i, (key, data)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write!(out, "\"{key}\":\"")?;
        push_hex(out, data);
        out.push(b'"');
    }
    Ok(())
}

pub(super) const HEX: &[u8; 16] = b"0123456789abcdef";
pub(super) const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

pub(super) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xF)]);
    }
}

pub(super) fn push_addr(out: &mut Vec<u8>, addr: BdAddr) {
    for (i, &b) in addr.0.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        out.push(HEX_UPPER[usize::from(b >> 4)]);
        out.push(HEX_UPPER[usize::from(b & 0xF)]);
    }
}
