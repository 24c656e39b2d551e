//! Test support for the provider adapters: a minimal HTTP/1.1 server on
//! loopback that records each request and answers as scripted (a stand-in
//! for a provider), and Stoplight Prism, installed into the target
//! directory on first use, validating requests against OpenAPI documents.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod fixtures;

/// A request as the stand-in received it.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the stand-in answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Status, extra headers, JSON body.
    Json(u16, Vec<(String, String)>, String),
    /// Never answer (the client times out).
    Hang,
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::Json(status, Vec::new(), body.to_owned())
    }

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

type Script = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A scripted HTTP server on 127.0.0.1.
pub struct StandIn {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    pub async fn start(script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> StandIn {
        StandIn::start_at("127.0.0.1:0".parse().unwrap(), script).await
    }

    /// On a given address (a provider coming back where it was).
    pub async fn start_at(
        addr: SocketAddr,
        script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> StandIn {
        StandIn::start_delayed(addr, Duration::ZERO, script).await
    }

    /// On a given address, holding each answer for `delay` first (a
    /// provider's own latency; other connections are served meanwhile).
    pub async fn start_delayed(
        addr: SocketAddr,
        delay: Duration,
        script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> StandIn {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let log = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (script, log) = (script.clone(), log.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, script, log, delay).await;
                });
            }
        });
        StandIn {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Script,
    log: Arc<Mutex<Vec<Recorded>>>,
    delay: Duration,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some(req) = parse(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let reply = script(&req);
        log.lock().unwrap().push(req);
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
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
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
}

/// Reads one request (Content-Length or chunked body) from `stream`.
async fn parse(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Recorded>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
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
                read_more(stream, buf).await?;
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
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                read_more(stream, buf).await?;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        let len: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            read_more(stream, buf).await?;
        }
        body = buf.drain(..len).collect();
    }
    Ok(Some(Recorded {
        method,
        path,
        headers,
        body,
    }))
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// The Prism release the tests install.
pub const PRISM_VERSION: &str = "5.14.2";

/// The `prism` executable, installed into the target directory with npm
/// when missing. `None` only when npm is not available at all.
pub fn prism() -> Option<PathBuf> {
    // One install per process; other processes are handled by the rename.
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("prism-{PRISM_VERSION}"));
    let bin = dir.join("node_modules/.bin/prism");
    if bin.exists() {
        return Some(bin);
    }
    if Command::new("npm").arg("--version").output().is_err() {
        return None;
    }
    // Install beside, then rename: concurrent test processes never see a
    // half-installed directory.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("prism-{PRISM_VERSION}.tmp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&tmp)
        .arg(format!("@stoplight/prism-cli@{PRISM_VERSION}"))
        .output()
        .expect("npm runs");
    assert!(
        out.status.success(),
        "npm install @stoplight/prism-cli failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another process won the race.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(bin.exists(), "prism not found at {}", bin.display());
    Some(bin)
}

/// Applies an RFC 6902 JSON Patch (add, replace, remove; other members of
/// an operation, such as `why`, are ignored as the RFC says).
pub fn apply_patch(doc: &mut serde_json::Value, patch: &serde_json::Value) {
    for op in patch.as_array().expect("a patch is an array") {
        let path = op["path"].as_str().expect("path");
        let (parent, last) = path.rsplit_once('/').expect("a pointer");
        let last = last.replace("~1", "/").replace("~0", "~");
        let target = doc
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("overlay path {parent} not in the document"));
        match op["op"].as_str() {
            Some("add" | "replace") => {
                let value = op["value"].clone();
                match target {
                    serde_json::Value::Object(m) => {
                        if op["op"] == "replace" {
                            assert!(m.contains_key(&last), "replace: {path} does not exist");
                        }
                        m.insert(last, value);
                    }
                    serde_json::Value::Array(a) => {
                        let i: usize = last.parse().expect("array index");
                        a[i] = value;
                    }
                    _ => panic!("overlay path {parent} is not a container"),
                }
            }
            Some("remove") => {
                target.as_object_mut().expect("object").remove(&last);
            }
            other => panic!("unsupported patch op {other:?}"),
        }
    }
}

/// A running `prism proxy`, killed when dropped.
pub struct Prism {
    pub url: String,
    child: Child,
    log: PathBuf,
}

impl Prism {
    /// Validates `spec.extract.json` + `spec.overlay.json` (from
    /// `tests/specs/`) in proxy mode with `--errors` in front of `upstream`.
    pub fn proxy(bin: &Path, spec: &str, upstream: &str) -> Prism {
        let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/specs");
        let read = |f: String| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(specs.join(&f)).unwrap()).unwrap()
        };
        let mut doc = read(format!("{spec}.extract.json"));
        apply_patch(&mut doc, &read(format!("{spec}.overlay.json")));
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openapi");
        std::fs::create_dir_all(&work).unwrap();
        let file = work.join(format!("{spec}-{}.json", std::process::id()));
        std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = work.join(format!("{spec}-{}.log", std::process::id()));
        let child = Command::new(bin)
            .arg("proxy")
            .arg(&file)
            .arg(upstream)
            .args(["--errors", "-h", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("prism starts");
        let mut p = Prism {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        p.wait_ready(port, Duration::from_secs(120));
        p
    }

    /// A bounded wait for Prism to listen.
    fn wait_ready(&mut self, port: u16, limit: Duration) {
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prism exited ({status}):\n{}", self.log_text());
            }
            assert!(
                start.elapsed() < limit,
                "prism did not start within {limit:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
