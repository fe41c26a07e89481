//! `picloud serve` as a process: the embedded SQLite default, the first-start admin token,
//! function endpoints over real HTTP, health checks, SIGTERM, and a restart that keeps the data.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use picloud_manager_core::{SqliteStore, Store};

struct Server {
    child: Child,
    addr: String,
    stdout: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_remove("PICLOUD_ADMIN_TOKEN")
        .env_remove("PICLOUD_DATABASE_URL")
        .stdout(Stdio::piped())
        .spawn()
        .expect("picloud serve starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stdout = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        assert!(Instant::now() < deadline, "no 'listening' line: {stdout:?}");
        let line = lines
            .next()
            .expect("the server printed its address")
            .expect("utf-8");
        if let Some(addr) = line.strip_prefix("PiCloud listening on http://") {
            break addr.to_string();
        }
        stdout.push(line);
    };
    Server {
        child,
        addr,
        stdout,
    }
}

/// One HTTP/1.1 request over a plain socket; returns (status, body).
fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {raw}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    dir
}

/// Seeds the embedded store in `dir` with a deployed function, as the management API will (it
/// comes next).
async fn deploy(dir: &Path, tenant: &str, function: &str, source: &str) {
    let store = SqliteStore::open(&dir.join("picloud.db"))
        .await
        .expect("store");
    let t = store.create_tenant(tenant).await.expect("tenant");
    let f = store
        .create_function(t.id, function, true)
        .await
        .expect("function");
    let v = store
        .add_version(f.id, source, "test")
        .await
        .expect("version");
    store.deploy(f.id, v.version).await.expect("deploy");
}

#[tokio::test]
async fn serves_functions_from_the_embedded_store_and_survives_a_restart() {
    let dir = data_dir("restart");
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/hello.rhai"
    ))
    .expect("example");
    deploy(&dir, "acme", "hello", &source).await;

    let mut server = start(&dir);
    assert!(
        server
            .stdout
            .iter()
            .any(|l| l.contains("Created the admin token")),
        "first start prints the admin token: {:?}",
        server.stdout
    );
    let addr = server.addr.clone();
    assert_eq!(http(&addr, "GET", "/healthz"), (200, "ok".into()));
    assert_eq!(http(&addr, "GET", "/readyz").0, 200);
    assert_eq!(
        http(&addr, "GET", "/fn/acme/hello/x?name=pi"),
        (200, "hello pi".into())
    );
    assert_eq!(
        http(&addr, "GET", "/fn/acme/hello"),
        (200, "hello world".into())
    );
    let (status, body) = http(&addr, "GET", "/fn/acme/missing");
    assert_eq!(status, 404);
    assert!(body.contains("not_found"), "{body}");
    assert_eq!(http(&addr, "GET", "/fn/other/hello").0, 404);

    // SIGTERM: the server exits cleanly.
    // SAFETY: kill(2) on the server this test started.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");

    // Restart: the data is still there and no second admin token is made.
    let server = start(&dir);
    assert!(
        !server
            .stdout
            .iter()
            .any(|l| l.contains("Created the admin token"))
    );
    assert_eq!(
        http(&server.addr, "GET", "/fn/acme/hello/?name=again"),
        (200, "hello again".into())
    );
}

#[tokio::test]
async fn a_failing_function_answers_with_its_outcome() {
    let dir = data_dir("failing");
    deploy(&dir, "acme", "spin", "fn handle(req) { loop {} }").await;
    let server = start(&dir);
    let (status, body) = http(&server.addr, "POST", "/fn/acme/spin");
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("fuel_exhausted"), "{body}");
}
