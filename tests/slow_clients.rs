//! The local API against slow, many and guessing clients, over real
//! sockets on loopback: headers that never end, bodies that never arrive,
//! more connections than the limit, shutdown with stalled connections
//! open, wrong bearer tokens by the dozen, and a bind address that is not
//! loopback. The timeouts are real socket timeouts (set short here), so
//! these tests measure elapsed time instead of injecting it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nearcast::api::{self, Api, ApiLimits, ApiSettings};
use nearcast::core::types::Timestamp;
use nearcast::credentials::SecretRef;
use nearcast::metrics::Metrics;
use nearcast::store::Store;
use support::TestClock;

const TOKEN: &str = "the-backends-token";

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start(limits: ApiLimits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = support::config_dir(dir.path(), support::CAMPAIGNS);
    let (store, hasher) = support::store_with_customers(&config);
    drop(store);
    let settings = ApiSettings {
        bind: "127.0.0.1:0".parse().unwrap(),
        token: Some(SecretRef::Env("API_TOKEN".into())),
        public_url: None,
        whatsapp: Some(api::MetaWebhook {
            app_secret: SecretRef::Env("API_TOKEN".into()),
            verify_token: SecretRef::Env("API_TOKEN".into()),
        }),
        twilio: None,
        vonage: None,
        limits,
    };
    let api = Arc::new(Api::new(
        Store::open(&config.daemon.database).unwrap(),
        hasher,
        settings.clone(),
        config.daemon.channels.clone(),
        Arc::new([("API_TOKEN", TOKEN)]),
        Arc::new(TestClock::fixed(Timestamp::from_secs(1_795_000_000))),
        Arc::new(Metrics::default()),
        Vec::new(),
    ));
    let listener = api::bind(settings.bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(api::serve(listener, api, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

fn short() -> ApiLimits {
    ApiLimits {
        header_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        ..ApiLimits::default()
    }
}

/// A raw connection that has sent `bytes` and nothing more.
fn stalled(addr: SocketAddr, bytes: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the server closes (or the read timeout): what it sent.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// One complete request on a fresh connection: (status, elapsed).
fn get(addr: SocketAddr, path: &str) -> (String, Duration) {
    let t = Instant::now();
    let mut s = stalled(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    let text = read_to_close(&mut s);
    (text.lines().next().unwrap_or("").to_owned(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_end_are_cut_off_at_the_header_timeout() {
    let server = start(short()).await;
    let addr = server.addr;
    let (elapsed, answer) = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let mut s = stalled(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        let answer = read_to_close(&mut s);
        (t.elapsed(), answer)
    })
    .await
    .unwrap();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
    assert!(!answer.contains("200 OK"), "{answer}");
    // An idle keep-alive connection goes the same way.
    let (elapsed, answer) = tokio::task::spawn_blocking(move || {
        let mut s = stalled(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let t = Instant::now();
        let answer = read_to_close(&mut s);
        (t.elapsed(), answer)
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(elapsed < Duration::from_secs(4), "idle for {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_408_at_the_request_timeout() {
    let server = start(short()).await;
    let addr = server.addr;
    let (elapsed, answer) = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let mut s = stalled(
            addr,
            "POST /webhooks/whatsapp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-Hub-Signature-256: sha256=00\r\nContent-Length: 1000\r\n\r\n{\"object\":",
        );
        let answer = read_to_close(&mut s);
        (t.elapsed(), answer)
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_limit_new_clients_get_503_and_healthz_comes_back() {
    let server = start(ApiLimits {
        max_connections: 8,
        ..ApiLimits::default()
    })
    .await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        // Eight clients that never finish their headers hold every slot.
        let mut hogs: Vec<TcpStream> = (0..8)
            .map(|_| stalled(addr, "GET /healthz HTTP/1.1\r\n"))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..20 {
            let (status, elapsed) = get(addr, "/healthz");
            assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
            assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
        }
        // One leaves: the next client is served.
        drop(hogs.pop());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, _) = get(addr, "/healthz");
            if status == "HTTP/1.1 200 OK" {
                break;
            }
            assert!(Instant::now() < deadline, "{status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_at_once_and_stalled_ones_within_the_grace() {
    // The defaults: headers may take 10 s, but shutdown takes at most 5.
    let mut server = start(ApiLimits::default()).await;
    let addr = server.addr;
    let conns = tokio::task::spawn_blocking(move || {
        let stalled_ones: Vec<TcpStream> = (0..50)
            .map(|_| stalled(addr, "POST /v1/customers HTTP/1.1\r\nHost: x\r\n"))
            .collect();
        let mut idle = stalled(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = [0u8; 4096];
        let n = idle.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
        (stalled_ones, idle)
    })
    .await
    .unwrap();
    let (stalled_ones, mut idle) = conns;
    let t = Instant::now();
    let _ = server.stop.take().unwrap().send(());
    let idle_closed = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let rest = read_to_close(&mut idle);
        assert!(rest.is_empty(), "{rest}");
        t.elapsed()
    });
    let done = tokio::time::timeout(Duration::from_secs(8), &mut server.task).await;
    let took = t.elapsed();
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
    assert!(
        took < Duration::from_millis(5_800),
        "serve returned after {took:?}"
    );
    assert!(idle_closed.await.unwrap() < Duration::from_secs(1));
    // The stalled connections are closed too, not left to the kernel.
    tokio::task::spawn_blocking(move || {
        for mut s in stalled_ones {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 64];
            assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
        }
    })
    .await
    .unwrap();
    // And nobody is listening any more.
    assert!(TcpStream::connect(addr).is_err());
}

async fn convert(client: &reqwest::Client, addr: SocketAddr, token: &str) -> reqwest::Response {
    client
        .post(format!("http://{addr}/v1/conversions"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_guessing_tokens_is_refused_and_others_are_not() {
    let server = start(ApiLimits::default()).await;
    let addr = server.addr;
    let guesser = reqwest::Client::builder()
        .local_address(Some("127.0.0.1".parse().unwrap()))
        .build()
        .unwrap();
    for i in 0..10 {
        let r = convert(&guesser, addr, &format!("guess-{i}")).await;
        assert_eq!(r.status().as_u16(), 401, "guess {i}");
    }
    // The eleventh is refused whatever it sends, the right token included.
    let r = convert(&guesser, addr, TOKEN).await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "300");
    // Another address is served (loopback answers on all of 127/8).
    let other = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let r = convert(&other, addr, TOKEN).await;
    assert_eq!(
        r.status().as_u16(),
        422,
        "past the token, the empty body is refused"
    );
    assert_eq!(convert(&other, addr, "wrong").await.status().as_u16(), 401);
}

#[test]
fn a_bind_address_off_loopback_is_warned_about() {
    assert_eq!(
        api::exposure_warning("127.0.0.1:8787".parse().unwrap()),
        None
    );
    assert_eq!(api::exposure_warning("[::1]:8787".parse().unwrap()), None);
    let w = api::exposure_warning("0.0.0.0:8787".parse().unwrap()).unwrap();
    assert!(
        w.starts_with("[api] bind 0.0.0.0:8787 is not loopback"),
        "{w}"
    );
    // check-config says so too, and still accepts the file.
    let dir = tempfile::tempdir().unwrap();
    support::config_dir(dir.path(), support::CAMPAIGNS);
    let path = dir.path().join("nearcast.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[api]\nbind = \"0.0.0.0:8787\"\n");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(["check-config", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: [api] bind 0.0.0.0:8787 is not loopback"),
        "{err}"
    );
}
