//! `nearcast stand-in`: a local stand-in for the messaging providers, so a
//! newcomer can watch real HTTP delivery (`nearcast demo --provider URL`)
//! without an account. It speaks just enough of each API to say "accepted":
//! WhatsApp Cloud API (`POST /{version}/{phone_number_id}/messages`), Twilio
//! (`POST /2010-04-01/Accounts/{sid}/Messages.json`) and Vonage Messages
//! (`POST /v1/messages`), and prints one readable line per request.
//!
//! A plain HTTP/1.1 server on tokio (keep-alive, `Content-Length` or
//! chunked bodies): no framework for three canned answers. The same server
//! runs the tests' scripted provider stand-ins ([`run`] with a [`Script`]).
//! Never used by the daemon; checks no credentials; keeps nothing.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::broadcast::Sink;

/// Largest request head or body accepted.
const MAX: usize = 1 << 20;

/// A request as the stand-in received it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `POST`, …
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The value of header `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    #[must_use]
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the stand-in answers a request with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Status, extra headers, JSON body.
    Json(u16, Vec<(String, String)>, String),
    /// Never answer (the client times out).
    Hang,
}

impl Reply {
    /// `status` with a JSON `body`.
    #[must_use]
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::Json(status, Vec::new(), body.to_owned())
    }

    /// The same reply with one more header.
    #[must_use]
    pub fn with_header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Json(s, mut h, b) => {
                h.push((name.to_owned(), value.to_owned()));
                Reply::Json(s, h, b)
            }
            Reply::Hang => Reply::Hang,
        }
    }
}

/// What to answer each request with (and whatever else to do with it:
/// print it, record it).
pub type Script = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

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
    let path = req.path.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
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
            line: format!("unknown  {} {path}", req.method),
        },
    }
}

/// Serves until `shutdown` completes, answering as the providers would
/// accept each message and printing a line per request to `out`.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    out: Sink,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let counter = AtomicU64::new(0);
    let script: Script = Arc::new(move |req| {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let a = answer(req, n);
        if let Ok(mut o) = out.lock() {
            let _ = writeln!(o, "{}", a.line);
            let _ = o.flush();
        }
        Reply::Json(a.status, Vec::new(), a.body)
    });
    run(listener, script, Duration::ZERO, shutdown).await
}

/// Serves `script` on `listener` until `shutdown` completes, holding each
/// answer for `delay` first (a provider's own latency; other connections
/// are served meanwhile). Connections are kept alive, as providers do.
///
/// # Errors
/// The listener failed.
pub async fn run(
    listener: TcpListener,
    script: Script,
    delay: Duration,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let script = script.clone();
                tokio::spawn(async move {
                    let _ = connection(stream, &script, delay).await;
                });
            }
        }
    }
}

/// Answers the requests of one connection until the client closes it.
async fn connection(
    mut stream: TcpStream,
    script: &Script,
    delay: Duration,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut stream, &mut buf).await? {
        let reply = script(&req);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match reply {
            Reply::Hang => {
                // Hold the connection until the client gives up.
                let mut sink = [0u8; 64];
                while stream.read(&mut sink).await? > 0 {}
                return Ok(());
            }
            Reply::Json(status, headers, body) => {
                let reason = match status {
                    200 => "OK",
                    201 => "Created",
                    202 => "Accepted",
                    404 => "Not Found",
                    _ => "Status",
                };
                let mut head = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                    body.len()
                );
                for (n, v) in headers {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                head.push_str("\r\n");
                // One write: head and body in two would wait out the
                // client's delayed ACK (Nagle), 40 ms a request.
                head.push_str(&body);
                stream.write_all(head.as_bytes()).await?;
                stream.flush().await?;
            }
        }
    }
    Ok(())
}

/// Reads one request (a `Content-Length` or chunked body) from `stream`;
/// `None` when the client closed the connection or sent too much.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX || !read_more(stream, buf).await? {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let path = first.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !read_more(stream, buf).await? {
                    return Ok(None);
                }
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&buf[..line_end])
                    .split(';')
                    .next()
                    .unwrap_or("0")
                    .trim(),
                16,
            )
            .unwrap_or(0);
            if body.len() + size > MAX {
                return Ok(None);
            }
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                if !read_more(stream, buf).await? {
                    return Ok(None);
                }
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        let len = get("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if len > MAX {
            return Ok(None);
        }
        while buf.len() < len {
            if !read_more(stream, buf).await? {
                return Ok(None);
            }
        }
        body = buf.drain(..len).collect();
    }
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

/// Reads more of the connection into `buf`; false at its end.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(path: &str, body: &str) -> Request {
        Request {
            method: "POST".into(),
            path: path.into(),
            headers: Vec::new(),
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
