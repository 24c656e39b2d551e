//! The tokens of a recording line that both parsers read the same way:
//! hex payloads, addresses, UUIDs, company ids, Wi-Fi kinds and scanner
//! names. Decoded straight from bytes, never through an intermediate
//! string.

use super::*;

/// Each byte's value as a hex digit, or [`NOT_HEX`].
pub(super) const HEX_VALUE: [u8; 256] = {
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
pub(super) const NOT_HEX: u8 = 0x80;

/// Hex-decodes `s`; `None` on an odd length or a non-hex digit.
pub(super) fn decode_hex(s: &[u8]) -> Option<Payload> {
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
pub(super) fn parse_uuid(s: &str) -> Option<Uuid128> {
    // Malformed in the canonical shape is malformed in any.
    canonical_uuid(s.as_bytes()).or_else(|| Uuid128::parse(s))
}

/// A UUID in the canonical 36-character form only, by table; `None` for
/// any other form, which [`Uuid128::parse`] may still accept.
pub(super) fn canonical_uuid(b: &[u8]) -> Option<Uuid128> {
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
pub(super) fn parse_addr(s: &str) -> Option<BdAddr> {
    addr_from_bytes(s.as_bytes())
}

/// [`parse_addr`] of the bytes; anything but hex digits and separators
/// fails, so a string that needed unescaping never passes.
pub(super) fn addr_from_bytes(b: &[u8]) -> Option<BdAddr> {
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

/// The layout's scanner for `name`: by name, else the only one there is.
pub(super) fn resolve_scanner(layout: &Layout, name: &str) -> Option<ScannerIdx> {
    layout
        .scanner_index(name)
        .or_else(|| (layout.scanners.len() == 1).then_some(ScannerIdx(0)))
}
pub(super) fn parse_company(s: &str) -> Option<u16> {
    company_from_bytes(s.as_bytes())
}

/// Decimal digits only (leading zeros allowed), within `u16`.
pub(super) fn company_from_bytes(b: &[u8]) -> Option<u16> {
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

pub(super) fn parse_wifi_kind(s: &str) -> Option<WifiKind> {
    wifi_kind_from_bytes(s.as_bytes())
}

pub(super) fn wifi_kind_from_bytes(b: &[u8]) -> Option<WifiKind> {
    match b {
        b"joined" => Some(WifiKind::Joined),
        b"seen" => Some(WifiKind::Seen),
        b"left" => Some(WifiKind::Left),
        _ => None,
    }
}
