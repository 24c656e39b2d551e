//! `/v1`: the retailer's backend enrols customers, opts them out, erases
//! them and reports conversions. Every call needs the bearer token, checked
//! by the router's layer (`super::require_bearer`) before the body is read. Enrolment goes through the same checks
//! and hashing as `nearcast customers import`; opt-out and erasure are the
//! CLI's. The running daemon notices each change through the registry
//! counter, as it does for the CLI.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{Api, with_store};
use crate::core::enrolment::Enrolment;
use crate::core::types::Timestamp;
use crate::store::{Conversion, ConversionOutcome, Error, Store};

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({"errors": [message.into()]})),
    )
        .into_response()
}

fn store_error(e: Error) -> Response {
    match e {
        Error::NoSuchCustomer(_) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "no such customer"})),
        )
            .into_response(),
        Error::Import(rows) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(
                json!({"errors": rows.iter().map(|r| r.message.clone()).collect::<Vec<_>>()}),
            ),
        )
            .into_response(),
        other => super::internal(&other.to_string()),
    }
}

/// Runs `op` on the API's connection, answering with `ok` of its result,
/// or with what the store's error means for the caller.
async fn call<T: Send + 'static>(
    api: &Arc<Api>,
    op: impl FnOnce(&mut Store) -> Result<T, Error> + Send + 'static,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    match with_store(api, op).await {
        Ok(Ok(v)) => ok(v),
        Ok(Err(e)) => store_error(e),
        Err(r) => r,
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

/// `POST /v1/customers`: add or update one customer.
pub(super) async fn enrol(State(api): State<Arc<Api>>, body: Bytes) -> Response {
    // The body is the enrolment itself, checked like a file's row.
    let e: Enrolment = match parse(&body) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let now = api.clock.now();
    let a = api.clone();
    let id = e.id.clone();
    call(&api, move |s| s.enrol(&e, &a.hasher, now), |report| {
            tracing::info!(customer = %id, added = report.added, "customer enrolled through the API");
            let code = if report.added > 0 {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                code,
                axum::Json(json!({
                    "customer": id,
                    "added": report.added > 0,
                    "identities": report.identities,
                })),
            )
                .into_response()
    })
    .await
}

/// `POST /v1/customers/{id}/opt-out`: every channel, at once.
pub(super) async fn opt_out(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let now = api.clock.now();
    let who = id.clone();
    call(
        &api,
        move |s| s.opt_out(&who, now),
        |()| {
            tracing::info!(customer = %id, "opted out through the API");
            (
                StatusCode::OK,
                axum::Json(json!({"customer": id, "opted_out": true})),
            )
                .into_response()
        },
    )
    .await
}

/// `DELETE /v1/customers/{id}`: erasure, as `customers forget`.
pub(super) async fn forget(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let who = id.clone();
    call(
        &api,
        move |s| s.forget(&who),
        |f| match f.not_compacted {
            None => {
                tracing::info!(customer = %id, "customer erased through the API");
                StatusCode::NO_CONTENT.into_response()
            }
            // Erased, but old copies may remain until a compaction: said
            // so, not reported as a failure to erase.
            Some(e) => {
                tracing::error!(customer = %id, error = %e, "customer erased through the API; the database could not be compacted");
                (
                    StatusCode::OK,
                    axum::Json(json!({"customer": id, "erased": true, "compacted": false, "error": e})),
                )
                    .into_response()
            }
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversionBody {
    customer: String,
    time: String,
    amount: Option<String>,
    amount_cents: Option<i64>,
    currency: String,
    reference: String,
}

/// `"12.34"` → 1234; at most two decimals, not negative.
fn cents(amount: &str) -> Option<i64> {
    let (whole, frac) = amount.trim().split_once('.').unwrap_or((amount.trim(), ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = format!("{frac:0<2}");
    whole
        .parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac.parse::<i64>().ok()?)
}

fn conversion_from(b: ConversionBody) -> Result<Conversion, String> {
    let at = b
        .time
        .parse::<jiff::Timestamp>()
        .map_err(|_| "`time` must be an RFC 3339 time, e.g. 2026-11-18T10:15:00Z".to_owned())?;
    let amount_cents = match (b.amount.as_deref(), b.amount_cents) {
        (Some(a), None) => cents(a).ok_or_else(|| {
            "`amount` is a decimal string with at most two decimals, e.g. \"12.90\"".to_owned()
        })?,
        (None, Some(c)) if c >= 0 => c,
        (None, Some(_)) => return Err("`amount_cents` must not be negative".into()),
        _ => {
            return Err("give exactly one of `amount` (\"12.90\") or `amount_cents` (1290)".into());
        }
    };
    let currency = b.currency.to_ascii_uppercase();
    if currency.len() != 3 || !currency.bytes().all(|c| c.is_ascii_uppercase()) {
        return Err("`currency` is an ISO 4217 code, e.g. EUR".into());
    }
    let reference = b.reference.trim().to_owned();
    if reference.is_empty() || reference.len() > 128 || reference.chars().any(char::is_control) {
        return Err("`reference` must be 1 to 128 printable characters".into());
    }
    Ok(Conversion {
        customer: b.customer,
        at: Timestamp(at.as_millisecond()),
        amount_cents,
        currency,
        reference,
    })
}

/// `POST /v1/conversions`: once per reference.
pub(super) async fn conversion(State(api): State<Arc<Api>>, body: Bytes) -> Response {
    let b: ConversionBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let c = match conversion_from(b) {
        Ok(c) => c,
        Err(e) => return bad_request(e),
    };
    let now = api.clock.now();
    let reference = c.reference.clone();
    let answer = move |outcome| match outcome {
        ConversionOutcome::Recorded => (
            StatusCode::CREATED,
            axum::Json(json!({"reference": reference, "duplicate": false})),
        )
            .into_response(),
        ConversionOutcome::Duplicate => (
            StatusCode::OK,
            axum::Json(json!({"reference": reference, "duplicate": true})),
        )
            .into_response(),
        ConversionOutcome::Conflict => (
            StatusCode::CONFLICT,
            axum::Json(json!({"error": "this reference was recorded with other values"})),
        )
            .into_response(),
    };
    call(&api, move |s| s.record_conversion(&c, now), answer).await
}

#[cfg(test)]
mod tests {
    use super::cents;

    #[test]
    fn decimal_amounts_to_cents() {
        assert_eq!(cents("12.34"), Some(1234));
        assert_eq!(cents("12.3"), Some(1230));
        assert_eq!(cents("12"), Some(1200));
        assert_eq!(cents("0.05"), Some(5));
        for bad in ["", "-1", "1.234", "1,50", "abc", ".5"] {
            assert_eq!(cents(bad), None, "{bad}");
        }
    }
}
