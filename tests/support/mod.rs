//! Test support, one module for every integration test and benchmark: a
//! small store (`shop`: configuration, customers, hand-made sightings), the
//! one test clock (`TestClock`), the provider adapters' fixtures (`fixtures`), a provider
//! stand-in on loopback
//! that records each request and answers as scripted (the server of
//! `nearcast stand-in`), and Stoplight Prism, installed from
//! `tests/package-lock.json` with `npm ci` into the target directory on
//! first use, validating requests against OpenAPI documents.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nearcast::app::stand_in;
use tokio::net::TcpListener;

pub mod broker;
mod clock;
pub mod fixtures;
mod shop;

#[allow(unused_imports)]
pub use clock::TestClock;
#[allow(unused_imports)]
pub use shop::*;

pub use nearcast::app::stand_in::Reply;
/// A request as the stand-in received it.
pub use nearcast::app::stand_in::Request as Recorded;

/// A scripted provider on 127.0.0.1: `nearcast stand-in`'s server with a
/// script of the test's, recording every request.
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
        let log = requests.clone();
        let script: stand_in::Script = Arc::new(move |req: &Recorded| {
            let reply = script(req);
            log.lock().unwrap().push(req.clone());
            reply
        });
        let task = tokio::spawn(async move {
            let _ = stand_in::run(listener, script, delay, std::future::pending()).await;
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

/// How long `npm ci` may take to install Prism before the tests give up
/// (a cold install takes well under a minute; an unreachable registry
/// would otherwise retry for hours).
pub const PRISM_INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The system's certificate authorities (Debian's `ca-certificates`).
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The `prism` executable: `tests/package.json` and `tests/package-lock.json`
/// (Stoplight Prism with every dependency pinned) installed with `npm ci`
/// into the target directory on first use, and reused while the lockfile
/// is unchanged.
///
/// # Panics
/// When Prism cannot be installed (npm missing, the registry unreachable,
/// the install slower than [`PRISM_INSTALL_TIMEOUT`]): a test that cannot
/// validate fails, it does not pass unchecked.
pub fn prism() -> PathBuf {
    // One install per process; other processes are handled by the rename.
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let lock = std::fs::read(tests.join("package-lock.json")).expect("tests/package-lock.json");
    let key = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(&lock)[..6]);
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = target.join(format!("prism-{key}"));
    let bin = dir.join("node_modules/.bin/prism");
    if bin.exists() {
        return bin;
    }
    let npm = Command::new("npm").arg("--version").output();
    assert!(
        npm.as_ref().is_ok_and(|o| o.status.success()),
        "npm is not installed, so Prism cannot validate the provider requests: \
         run scripts/test (it installs Debian's npm), or `apt-get install npm`"
    );
    // Install beside, then rename: concurrent test processes never see a
    // half-installed directory.
    let tmp = target.join(format!("prism-{key}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(tests.join(f), tmp.join(f)).unwrap();
    }
    let log_path = target.join(format!("prism-{key}.npm-ci.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("npm")
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--prefer-offline",
            "--fetch-retries=1",
            "--fetch-timeout=30000",
            "--loglevel=warn",
        ])
        // npm's own download cache lives in the target directory too.
        .arg(format!("--cache={}", target.join("npm-cache").display()))
        // Node trusts only its own copy of the public roots; a machine that
        // reaches the registry through its own CA (a company proxy) has it
        // in the system store, which Debian keeps here.
        .args(
            Some(Path::new(SYSTEM_CAS))
                .filter(|p| p.exists())
                .map(|p| format!("--cafile={}", p.display())),
        )
        .current_dir(&tmp)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("npm starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PRISM_INSTALL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&tmp);
            panic!(
                "`npm ci` of tests/package-lock.json (Stoplight Prism) did not finish within \
                 {PRISM_INSTALL_TIMEOUT:?}: is the npm registry reachable? npm's output is in {}:\n{}",
                log_path.display(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        panic!(
            "`npm ci` of tests/package-lock.json (Stoplight Prism) failed ({status}):\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another process won the race.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(bin.exists(), "prism not found at {}", bin.display());
    bin
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
