//! `nearcast stand-in`: a local stand-in for the messaging providers, so a
//! newcomer can watch real HTTP delivery (`nearcast demo --provider URL`)
//! without an account. It speaks just enough of each API to say "accepted":
//! WhatsApp Cloud API (`POST /{version}/{phone_number_id}/messages`), Twilio
//! (`POST /2010-04-01/Accounts/{sid}/Messages.json`) and Vonage Messages
//! (`POST /v1/messages`), and prints one readable line per request.
//!
//! A plain HTTP/1.1 server on tokio (one request per connection, then
//! `Connection: close`): no framework for three canned answers. Never used
//! by the daemon; checks no credentials; keeps nothing.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::broadcast::Sink;

/// Largest request head or body accepted.
const MAX: usize = 1 << 20;

/// A parsed request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `POST`, …
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The body.
    pub body: Vec<u8>,
}

/// The stand-in's answer to a request, and the line it prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// What it prints: `whatsapp → +4915… template welcome_back/de [Anna, 10]`.
    pub line: String,
}

/// Answers `req` as the provider would accept it; `n` numbers the message.
/// Pure, so each provider's shape is testable without a socket.
#[must_use]
pub fn answer(req: &Request, n: u64) -> Answer {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let text = String::from_utf8_lossy(&req.body);
    match (req.method.as_str(), parts.as_slice()) {
        ("POST", [version, phone_id, "messages"]) if version.starts_with('v') => {
            let j: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let to = j["to"].as_str().unwrap_or("?").to_owned();
            let what = match j["type"].as_str() {
                Some("template") => {
                    let params: Vec<&str> = j["template"]["components"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|c| c["type"] == "body")
                        .flat_map(|c| c["parameters"].as_array().into_iter().flatten())
                        .filter_map(|p| p["text"].as_str())
                        .collect();
                    format!(
                        "template {}/{} [{}]",
                        j["template"]["name"].as_str().unwrap_or("?"),
                        j["template"]["language"]["code"].as_str().unwrap_or("?"),
                        params.join(", ")
                    )
                }
                Some("text") => format!("text {:?}", j["text"]["body"].as_str().unwrap_or("")),
                Some(other) => other.to_owned(),
                None => "?".to_owned(),
            };
            Answer {
                status: 200,
                body: json!({
                    "messaging_product": "whatsapp",
                    "contacts": [{ "input": to, "wa_id": to.trim_start_matches('+') }],
                    "messages": [{ "id": format!("wamid.STANDIN{n:08}") }],
                })
                .to_string(),
                line: format!("whatsapp → {to} {what} (phone number id {phone_id})"),
            }
        }
        ("POST", ["2010-04-01", "Accounts", sid, "Messages.json"]) => {
            let form: Vec<(String, String)> = form_urlencoded::parse(text.as_bytes())
                .into_owned()
                .collect();
            let get = |k: &str| {
                form.iter()
                    .find(|(n, _)| n == k)
                    .map_or("", |(_, v)| v.as_str())
            };
            let media: Vec<&str> = form
                .iter()
                .filter(|(n, _)| n.starts_with("MediaUrl"))
                .map(|(_, v)| v.as_str())
                .collect();
            let to = get("To").to_owned();
            let mut what = format!("{:?}", get("Body"));
            if !media.is_empty() {
                what.push_str(&format!(" + media {}", media.join(" ")));
            }
            if !get("ContentSid").is_empty() {
                what = format!("content {}", get("ContentSid"));
            }
            let message_sid = format!("SM{n:032x}");
            Answer {
                status: 201,
                body: json!({
                    "sid": message_sid,
                    "account_sid": sid,
                    "to": to,
                    "from": get("From"),
                    "body": get("Body"),
                    "status": "queued",
                    "num_media": media.len().to_string(),
                })
                .to_string(),
                line: format!("twilio   → {to} {what}"),
            }
        }
        ("POST", ["v1", "messages"]) => {
            let j: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let to = j["to"].as_str().unwrap_or("?").to_owned();
            let what = match j["text"].as_str() {
                Some(t) => format!("{t:?}"),
                None => j["message_type"].as_str().unwrap_or("?").to_owned(),
            };
            Answer {
                status: 202,
                body: json!({ "message_uuid": format!("aaaaaaaa-bbbb-4ccc-8ddd-{n:012x}") })
                    .to_string(),
                line: format!(
                    "vonage   → {to} {} {what}",
                    j["channel"].as_str().unwrap_or("?")
                ),
            }
        }
        _ => Answer {
            status: 404,
            body: json!({ "error": "the stand-in does not know this path" }).to_string(),
            line: format!("unknown  {} {}", req.method, req.path),
        },
    }
}

/// Serves until `shutdown` completes, printing a line per request to `out`.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    out: Sink,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let counter = Arc::new(AtomicU64::new(0));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (mut stream, _) = accepted?;
                let (out, counter) = (out.clone(), counter.clone());
                tokio::spawn(async move {
                    if let Ok(Some(req)) = read_request(&mut stream).await {
                        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                        let a = answer(&req, n);
                        if let Ok(mut o) = out.lock() {
                            let _ = writeln!(o, "{}", a.line);
                            let _ = o.flush();
                        }
                        let _ = respond(&mut stream, &a).await;
                    }
                });
            }
        }
    }
}

async fn read_request(s: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX {
            return Ok(None);
        }
        match s.read(&mut chunk).await? {
            0 => return Ok(None),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("").to_owned();
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut rest = vec![0u8; length - body.len()];
        let n = s.read(&mut rest).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&rest[..n]);
    }
    body.truncate(length);
    Ok(Some(Request { method, path, body }))
}

async fn respond(stream: &mut TcpStream, a: &Answer) -> std::io::Result<()> {
    let reason = match a.status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        _ => "Not Found",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        a.status,
        a.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(a.body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(path: &str, body: &str) -> Request {
        Request {
            method: "POST".into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn each_provider_is_answered_in_its_own_shape() {
        let wa = answer(
            &post(
                "/v23.0/100000000000000/messages",
                r#"{"messaging_product":"whatsapp","to":"+4915112345678","type":"template","template":{"name":"welcome_back","language":{"code":"de"},"components":[{"type":"body","parameters":[{"type":"text","text":"Anna"}]}]}}"#,
            ),
            7,
        );
        assert_eq!(wa.status, 200);
        assert_eq!(
            wa.body,
            r#"{"contacts":[{"input":"+4915112345678","wa_id":"4915112345678"}],"messages":[{"id":"wamid.STANDIN00000007"}],"messaging_product":"whatsapp"}"#
        );
        assert_eq!(
            wa.line,
            "whatsapp → +4915112345678 template welcome_back/de [Anna] (phone number id 100000000000000)"
        );
        let tw = answer(
            &post(
                "/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json",
                "To=%2B4915112345678&From=%2B15005550006&Body=Hallo+Anna",
            ),
            1,
        );
        assert_eq!(tw.status, 201);
        assert!(
            tw.body
                .contains(r#""sid":"SM00000000000000000000000000000001""#)
        );
        assert_eq!(tw.line, "twilio   → +4915112345678 \"Hallo Anna\"");
        let vo = answer(
            &post(
                "/v1/messages",
                r#"{"to":"4915112345678","channel":"sms","message_type":"text","text":"Hi"}"#,
            ),
            2,
        );
        assert_eq!(vo.status, 202);
        assert!(vo.body.contains("message_uuid"));
        assert_eq!(vo.line, "vonage   → 4915112345678 sms \"Hi\"");
        assert_eq!(answer(&post("/nope", ""), 3).status, 404);
    }
}
