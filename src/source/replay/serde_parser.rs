//! The general parser: any line serde_json accepts as one JSON object,
//! through hand-written visitors. It alone decides what is wrong with a
//! line; the fast parser declines whatever it is not certain of and leaves
//! it here.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::*;

/// [`parse_line`] without the fast path: any line, by serde_json.
pub(super) fn parse_general(line: &str, layout: &Layout) -> Result<Observation, Reason> {
    let mut fields = Fields::default();
    parse_into(line, layout, &mut fields)?;
    fields.finish(layout)
}

/// Parses `line` into `fields`, for [`Fields::finish`].
pub(super) fn parse_into(line: &str, layout: &Layout, fields: &mut Fields) -> Result<(), Reason> {
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

// ---------------------------------------------------------------------------
// Deserialization. A hand-written visitor rather than a derived struct: it
// decodes hex and addresses in place (no intermediate `String`s), resolves the
// scanner while the name is still borrowed from the line, and knows which
// field failed, which the CLI reports.

/// Where parsing failed, for the [`Reason`].
#[derive(Default)]
pub(super) struct Ctx {
    /// A precise reason set by the failing visitor.
    fail: Option<Reason>,
    /// The field whose value is being parsed; an error inside it is
    /// [`Reason::Invalid`] of it.
    field: Option<Field>,
}

pub(super) fn fail<E: de::Error>(ctx: &mut Ctx, reason: Reason) -> E {
    ctx.fail = Some(reason);
    E::custom("skipped")
}

/// A key of a line object: the [`Field`] it names, or `None` for a key the
/// format does not know (its value is skipped).
pub(super) struct Key(Option<Field>);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(Key(Field::from_key(key)))
    }
}

/// The scanner a line names, resolved against the layout.
#[derive(Clone, Copy, Default)]
pub(super) enum ScannerRef {
    /// `scanner` absent or null.
    #[default]
    Default,
    /// Resolved (possibly to the only scanner).
    Known(ScannerIdx),
    /// Not in a layout with several scanners.
    Unknown,
}

/// A line's fields as parsed, before the required ones are checked.
#[derive(Default)]
pub(super) struct Fields {
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
    pub(super) fn finish(&mut self, layout: &Layout) -> Result<Observation, Reason> {
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
pub(super) struct LineSeed<'c, 'f, 'l> {
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
            ctx.field = key.0;
            let Some(field) = key.0 else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            match field {
                Field::T => {
                    let secs = map.next_value::<f64>()?;
                    let at = Timestamp::from_secs_f64(secs)
                        .ok_or_else(|| fail(ctx, Reason::Invalid(Field::T)))?;
                    l.t = Some(at);
                }
                Field::Scanner => l.scanner = map.next_value_seed(ScannerSeed(self.layout))?,
                Field::Addr => l.addr = Some(map.next_value_seed(ADDR)?),
                Field::Rssi => {
                    let v = map.next_value::<i64>()?;
                    let v = i8::try_from(v).map_err(|_| fail(ctx, Reason::Invalid(Field::Rssi)))?;
                    l.rssi = Some(Rssi(i16::from(v)));
                }
                Field::TxPower => {
                    l.tx_power = match map.next_value::<Option<i64>>()? {
                        None => None,
                        Some(v) => Some(
                            i8::try_from(v)
                                .map_err(|_| fail(ctx, Reason::Invalid(Field::TxPower)))?,
                        ),
                    };
                }
                Field::Name => l.name = map.next_value_seed(StrSeed { nullable: true })?,
                Field::Mfg => map.next_value_seed(DataSeed::mfg(&mut *ctx, &mut l.mfg))?,
                Field::Svc => map.next_value_seed(DataSeed::svc(&mut *ctx, &mut l.svc))?,
                Field::Uuids => map.next_value_seed(UuidsSeed(&mut l.uuids))?,
                Field::Wifi => l.wifi = Some(map.next_value_seed(WIFI_KIND)?),
                Field::Mac => l.mac = Some(map.next_value_seed(ADDR)?),
                Field::Source => l.source = map.next_value_seed(StrSeed { nullable: false })?,
            }
            ctx.field = None;
        }
        Ok(())
    }
}

pub(super) struct ScannerSeed<'l>(&'l Layout);

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
pub(super) struct ParseStr<T> {
    parse: fn(&str) -> Option<T>,
    what: &'static str,
}

impl<T> ParseStr<T> {
    /// The same seed again (a derived `Copy` would ask `T: Copy`).
    fn copy(&self) -> ParseStr<T> {
        ParseStr {
            parse: self.parse,
            what: self.what,
        }
    }
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

pub(super) const ADDR: ParseStr<BdAddr> = ParseStr {
    parse: parse_addr,
    what: "an address AA:BB:CC:DD:EE:FF",
};

pub(super) const UUID: ParseStr<Uuid128> = ParseStr {
    parse: parse_uuid,
    what: "a 128-bit UUID",
};

pub(super) const COMPANY: ParseStr<u16> = ParseStr {
    parse: parse_company,
    what: "a decimal company id",
};

pub(super) const WIFI_KIND: ParseStr<WifiKind> = ParseStr {
    parse: parse_wifi_kind,
    what: "\"joined\", \"seen\" or \"left\"",
};

/// A string field; `nullable` accepts `null` as `None`.
pub(super) struct StrSeed {
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

/// The `mfg` object (decimal company id → hex) and the `svc` object
/// (service UUID → hex): keys read by `key`, each entry made by `entry`.
pub(super) struct DataSeed<'c, 'o, K, T> {
    ctx: &'c mut Ctx,
    out: &'o mut SmallVec<[T; 1]>,
    key: ParseStr<K>,
    section: fn(K) -> Section,
    entry: fn(K, Payload) -> T,
    expecting: &'static str,
}

impl<'c, 'o> DataSeed<'c, 'o, u16, ManufacturerData> {
    fn mfg(ctx: &'c mut Ctx, out: &'o mut SmallVec<[ManufacturerData; 1]>) -> Self {
        DataSeed {
            ctx,
            out,
            key: COMPANY,
            section: Section::Mfg,
            entry: |company, data| ManufacturerData { company, data },
            expecting: "an object of company id to hex",
        }
    }
}

impl<'c, 'o> DataSeed<'c, 'o, Uuid128, ServiceData> {
    fn svc(ctx: &'c mut Ctx, out: &'o mut SmallVec<[ServiceData; 1]>) -> Self {
        DataSeed {
            ctx,
            out,
            key: UUID,
            section: Section::Svc,
            entry: |uuid, data| ServiceData { uuid, data },
            expecting: "an object of service UUID to hex",
        }
    }
}

impl<'de, K: Copy, T> DeserializeSeed<'de> for DataSeed<'_, '_, K, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, K: Copy, T> Visitor<'de> for DataSeed<'_, '_, K, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(self.key.copy())? {
            let data = map.next_value_seed(HexSeed {
                ctx: &mut *self.ctx,
                section: (self.section)(key),
            })?;
            self.out.push((self.entry)(key, data));
        }
        Ok(())
    }
}

/// The `uuids` array.
pub(super) struct UuidsSeed<'o>(&'o mut SmallVec<[Uuid128; 1]>);

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
pub(super) struct HexSeed<'c> {
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
