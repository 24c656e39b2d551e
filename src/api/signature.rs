//! Webhook signatures, as pure functions of the raw request: Meta's
//! `X-Hub-Signature-256`, Twilio's `X-Twilio-Signature` and Vonage's signed
//! JWT. Every comparison is constant-time (the MACs' own `verify_slice`).
//!
//! Vonage's JWT is HS256 only, so it is checked here with `hmac` and `sha2`
//! rather than a JWT crate: `jsonwebtoken` would bring a second crypto stack
//! (ring, or RustCrypto's RSA and elliptic curves) for one HMAC, and it is
//! exactly the `alg` confusion a general JWT library must guard against that
//! a fixed-algorithm check cannot fall into.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::core::types::Timestamp;

/// Why a webhook was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// No signature header (HTTP 401).
    #[error("signature missing")]
    Missing,
    /// The signature does not match (HTTP 403).
    #[error("signature does not match")]
    Invalid,
    /// A Vonage token older than allowed, or from the future (HTTP 403).
    #[error("token too old")]
    Stale,
}

/// How old a Vonage token may be (and how far ahead a clock may run).
pub const VONAGE_MAX_AGE: Duration = Duration::from_secs(300);

fn hmac256(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()))
}

/// Meta: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>`.
///
/// # Errors
/// [`Reject::Missing`] without the header, [`Reject::Invalid`] otherwise.
pub fn verify_meta(app_secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), Reject> {
    let header = header.ok_or(Reject::Missing)?;
    let hex_sig = header.strip_prefix("sha256=").ok_or(Reject::Invalid)?;
    let sig = hex::decode(hex_sig.trim()).map_err(|_| Reject::Invalid)?;
    let mut mac = hmac256(app_secret);
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| Reject::Invalid)
}

/// Meta's signature header for `body` (tests and stand-ins).
#[must_use]
pub fn sign_meta(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac256(app_secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn twilio_mac(auth_token: &[u8], url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // By name; a repeated name (MediaUrl…) by value, as Twilio's libraries do.
    sorted.sort();
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(auth_token)
        .unwrap_or_else(|_| <Hmac<Sha1> as KeyInit>::new(&Default::default()));
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac
}

/// Twilio: base64(HMAC-SHA1(auth token, URL + each POST parameter's name
/// and value, sorted by name)).
#[must_use]
pub fn sign_twilio(auth_token: &[u8], url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(twilio_mac(auth_token, url, params).finalize().into_bytes())
}

/// Checks `X-Twilio-Signature` for a form POST to `url`.
///
/// # Errors
/// [`Reject::Missing`] without the header, [`Reject::Invalid`] otherwise.
pub fn verify_twilio(
    auth_token: &[u8],
    url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> Result<(), Reject> {
    let header = header.ok_or(Reject::Missing)?;
    let sig = STANDARD
        .decode(header.trim())
        .map_err(|_| Reject::Invalid)?;
    twilio_mac(auth_token, url, params)
        .verify_slice(&sig)
        .map_err(|_| Reject::Invalid)
}

/// An HS256 JWT over `claims` (tests and stand-ins; Vonage signs its own).
#[must_use]
pub fn sign_hs256(secret: &[u8], claims: &serde_json::Value) -> String {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = hmac256(secret);
    mac.update(format!("{head}.{body}").as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{head}.{body}.{sig}")
}

/// Vonage: `Authorization: Bearer <JWT>`, HS256 with the signature secret,
/// whose `iat` is at most [`VONAGE_MAX_AGE`] from `now` and whose
/// `payload_hash` is the hex SHA-256 of the raw body.
///
/// # Errors
/// [`Reject::Missing`] without a bearer token, [`Reject::Stale`] for an
/// old token, [`Reject::Invalid`] for anything else.
pub fn verify_vonage(
    secret: &[u8],
    body: &[u8],
    authorization: Option<&str>,
    now: Timestamp,
) -> Result<(), Reject> {
    let auth = authorization.ok_or(Reject::Missing)?;
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .ok_or(Reject::Missing)?
        .trim();
    let mut parts = token.split('.');
    let (Some(head), Some(claims), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reject::Invalid);
    };
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| Reject::Invalid)?;
    let mut mac = hmac256(secret);
    mac.update(head.as_bytes());
    mac.update(b".");
    mac.update(claims.as_bytes());
    mac.verify_slice(&sig).map_err(|_| Reject::Invalid)?;
    // Signed by the secret; the algorithm is still checked, so a token
    // meant for another scheme is not taken for this one.
    let json = |part: &str| -> Result<serde_json::Value, Reject> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| Reject::Invalid)?;
        serde_json::from_slice(&bytes).map_err(|_| Reject::Invalid)
    };
    if json(head)?.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(Reject::Invalid);
    }
    let claims = json(claims)?;
    let iat = claims
        .get("iat")
        .and_then(serde_json::Value::as_i64)
        .ok_or(Reject::Invalid)?;
    let max = i64::try_from(VONAGE_MAX_AGE.as_secs()).unwrap_or(300);
    let now_s = now.0.div_euclid(1000);
    if now_s.saturating_sub(iat) > max || iat.saturating_sub(now_s) > max {
        return Err(Reject::Stale);
    }
    let want = claims
        .get("payload_hash")
        .and_then(|h| h.as_str())
        .ok_or(Reject::Invalid)?;
    let got = hex::encode(Sha256::digest(body));
    // Both are public once the MAC matched; equality is enough here.
    if !want.eq_ignore_ascii_case(&got) {
        return Err(Reject::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The worked example of Twilio's webhook security documentation
    /// (twilio.com/docs/usage/security, auth token `12345`), as pinned in
    /// several independent client test suites; python3's `hmac` gives the
    /// same value.
    #[test]
    fn twilio_documented_vector() {
        let params = p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            sign_twilio(b"12345", url, &params),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
        assert_eq!(
            verify_twilio(b"12345", url, &params, Some("GvWf1cFY/Q7PnoempGyD5oXAezc=")),
            Ok(())
        );
        let mut tampered = params.clone();
        tampered[2].1 = "9999".into();
        assert_eq!(
            verify_twilio(
                b"12345",
                url,
                &tampered,
                Some("GvWf1cFY/Q7PnoempGyD5oXAezc=")
            ),
            Err(Reject::Invalid)
        );
        assert_eq!(
            verify_twilio(b"12346", url, &params, Some("GvWf1cFY/Q7PnoempGyD5oXAezc=")),
            Err(Reject::Invalid)
        );
        assert_eq!(
            verify_twilio(b"12345", url, &params, None),
            Err(Reject::Missing)
        );
    }

    /// HMAC-SHA256 of `{"a":1}` under `s3cret`, computed independently with
    /// python3: `hmac.new(b"s3cret", b'{"a":1}', hashlib.sha256).hexdigest()`.
    #[test]
    fn meta_vector() {
        let want = "sha256=5910e62016ef5034272c926c27071992a465c2335cecf41851bda071577f4f6d";
        assert_eq!(sign_meta(b"s3cret", br#"{"a":1}"#), want);
        assert_eq!(verify_meta(b"s3cret", br#"{"a":1}"#, Some(want)), Ok(()));
        assert_eq!(
            verify_meta(b"s3cret", br#"{"a":2}"#, Some(want)),
            Err(Reject::Invalid)
        );
        assert_eq!(
            verify_meta(b"other", br#"{"a":1}"#, Some(want)),
            Err(Reject::Invalid)
        );
        assert_eq!(verify_meta(b"s3cret", b"", None), Err(Reject::Missing));
        assert_eq!(
            verify_meta(b"s3cret", br#"{"a":1}"#, Some("sha1=00")),
            Err(Reject::Invalid)
        );
    }

    /// The JWT (RFC 7519 HS256) of `{"iat":1700000000,"payload_hash":
    /// sha256("{}")}` under `vonage-secret`, built independently with
    /// python3 (base64url without padding, HMAC-SHA256 over `head.claims`).
    #[test]
    fn vonage_vector() {
        let body = b"{}";
        let hash = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(hex::encode(Sha256::digest(body)), hash);
        let claims = serde_json::json!({"iat": 1_700_000_000, "payload_hash": hash});
        let token = sign_hs256(b"vonage-secret", &claims);
        assert_eq!(token, VONAGE_TOKEN);
        let auth = format!("Bearer {token}");
        let now = Timestamp::from_secs(1_700_000_100);
        assert_eq!(
            verify_vonage(b"vonage-secret", body, Some(&auth), now),
            Ok(())
        );
        assert_eq!(
            verify_vonage(b"vonage-secret", b"{ }", Some(&auth), now),
            Err(Reject::Invalid)
        );
        assert_eq!(
            verify_vonage(b"wrong", body, Some(&auth), now),
            Err(Reject::Invalid)
        );
        assert_eq!(
            verify_vonage(
                b"vonage-secret",
                body,
                Some(&auth),
                Timestamp::from_secs(1_700_000_301)
            ),
            Err(Reject::Stale)
        );
        assert_eq!(
            verify_vonage(b"vonage-secret", body, None, now),
            Err(Reject::Missing)
        );
        // alg "none" with the signature stripped is refused.
        let none = format!(
            "Bearer {}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            token.split('.').nth(1).unwrap_or_default()
        );
        assert_eq!(
            verify_vonage(b"vonage-secret", body, Some(&none), now),
            Err(Reject::Invalid)
        );
    }

    const VONAGE_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
        eyJpYXQiOjE3MDAwMDAwMDAsInBheWxvYWRfaGFzaCI6IjQ0MTM2ZmEzNTViMzY3OGExMTQ2YWQxNmY3ZTg2NDllOTRmYjRmYzIxZmU3N2U4MzEwYzA2MGY2MWNhYWZmOGEifQ.\
        7FBOiRhTwgbRGvr7fd_BHbuOfTfnjW8fs1svAyVO-i4";
}
