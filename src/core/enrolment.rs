//! Who may be enrolled, and how: the checks on a customer's enrolment
//! (id, name, phone, channels, consent, identities, segments, purposes,
//! double opt-in) and the hashing of their device identities, in one type
//! that the customers file and the local API both go through.
//!
//! Pure: reads no file and no database. Whether an identity already
//! belongs to someone else is the store's question, asked after this.
//! Messages never echo an identifier's value.

use super::identity::{Hasher, IdHash, Identity};
use super::rotating::RotatingKey;
use super::types::{Purpose, Purposes, Timestamp};

/// One customer's enrolment as given: a customers-file row or a
/// `POST /v1/customers` body (this type, as JSON: `id`, `consent_at` and
/// `consent_source` required, unknown keys refused). List fields may hold
/// one element with the file's separators (`whatsapp|sms`) or one element
/// per item; both are read alike.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
// The name the API's errors have always given a malformed body.
#[serde(deny_unknown_fields, rename = "EnrolBody")]
pub struct Enrolment {
    /// Retailer's id.
    pub id: String,
    /// First name.
    #[serde(default)]
    pub first_name: String,
    /// Phone, international form.
    #[serde(default)]
    pub phone: Option<String>,
    /// Channels in preference order (`|` separates).
    #[serde(default)]
    pub channels: Vec<String>,
    /// When consent was given (RFC 3339).
    pub consent_at: String,
    /// Where consent was captured.
    pub consent_source: String,
    /// Identities as in the file (`ibeacon:…`, `mac:…`, `app:…`; `;`
    /// separates).
    #[serde(default)]
    pub identities: Vec<String>,
    /// Segments (`;` or `|` separates).
    #[serde(default)]
    pub segments: Vec<String>,
    /// Purposes consented to (`;` or `|` separates); all three when empty.
    #[serde(default)]
    pub purposes: Vec<String>,
    /// Version of the consent text shown.
    #[serde(default)]
    pub consent_text: Option<String>,
    /// Double opt-in: `None` = confirmed by the retailer's system (like a
    /// file without the column, a body without the key); `Some(None)` (a
    /// JSON `null`) or an empty time = pending; `Some(Some(t))` = confirmed
    /// at `t` (RFC 3339).
    #[serde(default, deserialize_with = "present")]
    pub confirmed_at: Option<Option<String>>,
}

/// `Some(value)` for a present key, even `null`; `None` (by `default`)
/// for an absent one.
fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// An enrolment that passed every check, its identities hashed: what the
/// store writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    /// Retailer's id.
    pub id: String,
    /// First name.
    pub first_name: String,
    /// Phone (E.164), if any.
    pub phone: Option<String>,
    /// Channels in preference order.
    pub channels: Vec<String>,
    /// Segments.
    pub segments: Vec<String>,
    /// When consent was given.
    pub consent_at: Timestamp,
    /// Where consent was captured.
    pub consent_source: String,
    /// Hashed device identities, with their kind.
    pub identities: Vec<(IdHash, &'static str)>,
    /// Rotating-identity keys.
    pub rotating: Vec<RotatingKey>,
    /// Purposes consented to.
    pub purposes: Purposes,
    /// Version of the consent text shown.
    pub consent_text: String,
    /// When offers were confirmed (double opt-in); `None` = pending.
    pub confirmed_at: Option<Timestamp>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// E.164: `+`, then 8 to 15 digits, no leading zero.
fn valid_phone(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// The items of a list field: every element split at `seps`, trimmed,
/// empty ones dropped.
fn items<'a>(list: &'a [String], seps: &'a [char]) -> impl Iterator<Item = &'a str> + 'a {
    list.iter()
        .flat_map(move |e| e.split(seps))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn time(s: &str) -> Option<Timestamp> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(|ts| Timestamp(ts.as_millisecond()))
}

impl Enrolment {
    /// Checks every field and hashes the identities with `hasher`.
    ///
    /// # Errors
    /// What is wrong and how to write it, for the first field that is.
    pub fn check(&self, hasher: &Hasher) -> Result<Enrolled, String> {
        let id = self.id.trim();
        if id.is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
            return Err("`id` must be 1 to 64 printable characters".into());
        }
        let first_name = self.first_name.trim();
        if first_name.chars().count() > 64 || first_name.chars().any(char::is_control) {
            return Err("`first_name` must be at most 64 printable characters".into());
        }
        let phone = match self.phone.as_deref().map_or("", str::trim) {
            "" => None,
            p => {
                let p: String = p
                    .chars()
                    .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
                    .collect();
                if !valid_phone(&p) {
                    return Err("`phone` must be in international form, e.g. +4915112345678".into());
                }
                Some(p)
            }
        };
        let channels: Vec<&str> = items(&self.channels, &['|']).collect();
        if let Some(bad) = channels.iter().find(|c| !valid_name(c)) {
            return Err(format!(
                "channel {bad:?} must be lowercase letters, digits, `-` or `_` (separate channels with |)"
            ));
        }
        if !channels.is_empty() && phone.is_none() {
            return Err("`phone` is needed to reach the customer on their channels".into());
        }
        let consent_at = match self.consent_at.trim() {
            "" => {
                return Err(
                    "`consent_at` is empty: only customers who opted in can be enrolled".into(),
                );
            }
            t => time(t).ok_or(
                "`consent_at` must be an RFC 3339 time, e.g. 2026-03-01T10:00:00Z".to_owned(),
            )?,
        };
        let consent_source = self.consent_source.trim();
        if consent_source.is_empty() {
            return Err("`consent_source` is empty: say where consent was captured (app, captive-portal, kiosk, …)".into());
        }
        let mut identities = Vec::new();
        let mut rotating = Vec::new();
        for (i, text) in items(&self.identities, &[';']).enumerate() {
            if let Some(key) = RotatingKey::parse(text) {
                rotating.push(key.map_err(|e| format!("identity {}: {e}", i + 1))?);
                continue;
            }
            let identity = Identity::parse(text).map_err(|e| format!("identity {}: {e}", i + 1))?;
            identities.push((hasher.hash(&identity), identity.kind()));
        }
        if identities.is_empty() && rotating.is_empty() {
            return Err(
                "`identities` is empty: give at least one, e.g. ibeacon:<uuid>:<major>:<minor>"
                    .into(),
            );
        }
        let segments: Vec<&str> = items(&self.segments, &[';', '|']).collect();
        if let Some(bad) = segments.iter().find(|s| !valid_name(s)) {
            return Err(format!(
                "segment {bad:?} must be lowercase letters, digits, `-` or `_`"
            ));
        }
        // Not given at all: every purpose, as before purposes existed.
        let mut purposes = if self.purposes.iter().all(|p| p.trim().is_empty()) {
            Purposes::ALL
        } else {
            Purposes::default()
        };
        for p in items(&self.purposes, &[';', '|']) {
            purposes =
                purposes.with(Purpose::parse(p).ok_or_else(|| {
                    format!("purpose {p:?} is not one of welcome, loyalty, offers")
                })?);
        }
        let consent_text = match self.consent_text.as_deref().map_or("", str::trim) {
            "" => "v1".to_owned(),
            t if t.len() <= 64 && !t.chars().any(char::is_control) => t.to_owned(),
            _ => {
                return Err(
                    "`consent_text` is the version of the consent text shown, at most 64 characters"
                        .into(),
                );
            }
        };
        // Without the field, the retailer's system is taken to have
        // confirmed the consent it exports; an empty value means not (yet)
        // confirmed.
        let confirmed_at = match &self.confirmed_at {
            None => Some(consent_at),
            Some(t) => match t.as_deref().map_or("", str::trim) {
                "" => None,
                t => Some(
                    time(t).ok_or("`confirmed_at` must be an RFC 3339 time or empty".to_owned())?,
                ),
            },
        };
        Ok(Enrolled {
            id: id.to_owned(),
            first_name: first_name.to_owned(),
            phone,
            channels: channels.into_iter().map(str::to_owned).collect(),
            segments: segments.into_iter().map(str::to_owned).collect(),
            consent_at,
            consent_source: consent_source.to_owned(),
            identities,
            rotating,
            purposes,
            consent_text,
            confirmed_at,
        })
    }
}

/// How far ahead of `now` a consent time may lie (clocks and time zones
/// disagree a little); beyond it the time is a typo.
const CONSENT_SKEW_MS: i64 = 24 * 3_600_000;

impl Enrolled {
    /// Refuses a consent time after `now`: consent is recorded when it was
    /// given, and a time in the future would also count as newer than any
    /// opt-out, re-enrolling someone who left.
    ///
    /// # Errors
    /// What is wrong, with the likely intended time (the same day in the
    /// latest year not after `now`).
    pub fn check_consent_time(&self, now: Timestamp) -> Result<(), String> {
        if self.consent_at.0 <= now.0.saturating_add(CONSENT_SKEW_MS) {
            return Ok(());
        }
        let suggestion = jiff::Timestamp::from_millisecond(self.consent_at.0)
            .ok()
            .zip(jiff::Timestamp::from_millisecond(now.0).ok())
            .and_then(|(at, now)| {
                let utc = jiff::tz::TimeZone::UTC;
                let at = at.to_zoned(utc.clone());
                let year = now.to_zoned(utc).year();
                [year, year - 1]
                    .into_iter()
                    .filter_map(|y| at.with().year(y).build().ok())
                    .find(|t| t.timestamp() <= now)
            })
            .map(|t| format!(" (did you mean {}?)", t.timestamp()))
            .unwrap_or_default();
        Err(format!(
            "`consent_at` {} is in the future: give when the customer consented{suggestion}",
            self.consent_at
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consent_time_in_the_future_is_refused_with_the_likely_one() {
        let hasher = Hasher::new(&[7; 32]);
        let now = Timestamp(1_790_000_000_000); // 2026-09-21
        let at = |t: &str| {
            Enrolment {
                consent_at: t.into(),
                ..anna()
            }
            .check(&hasher)
            .unwrap()
            .check_consent_time(now)
        };
        assert_eq!(at("2026-03-01T10:00:00Z"), Ok(()));
        assert_eq!(
            at("2099-03-01T10:00:00Z"),
            Err(
                "`consent_at` 2099-03-01T10:00:00Z is in the future: give when the customer \
                 consented (did you mean 2026-03-01T10:00:00Z?)"
                    .into()
            )
        );
        // Later this year than now: last year's date.
        assert_eq!(
            at("2099-12-24T10:00:00Z"),
            Err(
                "`consent_at` 2099-12-24T10:00:00Z is in the future: give when the customer \
                 consented (did you mean 2025-12-24T10:00:00Z?)"
                    .into()
            )
        );
        // Within a day ahead (another clock, another time zone): accepted.
        assert_eq!(at("2026-09-21T20:00:00Z"), Ok(()));
    }

    fn anna() -> Enrolment {
        Enrolment {
            id: "anna".into(),
            first_name: "Anna".into(),
            phone: Some("+49 151 1234 5678".into()),
            channels: vec!["whatsapp|sms".into()],
            consent_at: "2026-03-01T10:00:00Z".into(),
            consent_source: "app".into(),
            identities: vec!["mac:C4:7C:8D:6A:11:02".into()],
            ..Enrolment::default()
        }
    }

    #[test]
    fn a_row_and_a_body_are_read_alike() {
        let hasher = Hasher::new(&[7; 32]);
        let row = anna().check(&hasher).unwrap();
        let body = Enrolment {
            channels: vec!["whatsapp".into(), "sms".into()],
            ..anna()
        }
        .check(&hasher)
        .unwrap();
        assert_eq!(row, body);
        assert_eq!(row.phone.as_deref(), Some("+4915112345678"));
        assert_eq!(row.channels, ["whatsapp", "sms"]);
        assert_eq!(row.purposes, Purposes::ALL);
        assert_eq!(row.consent_text, "v1");
        assert_eq!(row.confirmed_at, Some(row.consent_at));
        assert_eq!(row.identities.len(), 1);
    }

    #[test]
    fn each_check_says_what_to_write() {
        let hasher = Hasher::new(&[7; 32]);
        let err = |e: Enrolment| e.check(&hasher).unwrap_err();
        assert_eq!(
            err(Enrolment {
                consent_at: String::new(),
                ..anna()
            }),
            "`consent_at` is empty: only customers who opted in can be enrolled"
        );
        assert_eq!(
            err(Enrolment {
                phone: None,
                ..anna()
            }),
            "`phone` is needed to reach the customer on their channels"
        );
        assert_eq!(
            err(Enrolment {
                purposes: vec!["spam".into()],
                ..anna()
            }),
            "purpose \"spam\" is not one of welcome, loyalty, offers"
        );
        let pending = Enrolment {
            confirmed_at: Some(None),
            ..anna()
        };
        assert_eq!(pending.check(&hasher).unwrap().confirmed_at, None);
    }
}
