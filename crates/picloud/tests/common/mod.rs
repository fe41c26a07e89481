//! Helpers shared by the server tests: a real `picloud serve` process on a loopback port, on
//! SQLite or on a fresh database of the local PostgreSQL, and a small HTTP client.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

/// The admin token the test servers are started with (`PICLOUD_ADMIN_TOKEN`).
pub const ADMIN: &str = "pc_test_admin_0123456789abcdef0123456789";

use picloud_store::testing::pg_admin_url;

/// A running `picloud serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    /// What it printed before it listened.
    pub stdout: Vec<String>,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A data directory of its own for one test.
pub fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    dir
}

/// One module cache for all test servers, so each does not compile the guest again.
pub fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-guest-cache")
}

impl Server {
    /// Starts a server on `data_dir` (SQLite) or `database_url` (PostgreSQL) with the test
    /// admin token, and waits until it listens.
    pub fn start(data_dir: &Path, database_url: Option<&str>) -> Self {
        Self::start_with(data_dir, database_url, Some(ADMIN))
    }

    /// As [`Server::start`] on SQLite, with more `picloud serve` flags.
    pub fn start_with_args(data_dir: &Path, args: &[&str]) -> Self {
        Self::spawn(data_dir, None, Some(ADMIN), args)
    }

    /// As [`Server::start`], with more `picloud serve` flags.
    pub fn start_on(data_dir: &Path, database_url: Option<&str>, args: &[&str]) -> Self {
        Self::spawn(data_dir, database_url, Some(ADMIN), args)
    }

    /// As [`Server::start`]; `admin_token: None` lets the server make up its own.
    pub fn start_with(
        data_dir: &Path,
        database_url: Option<&str>,
        admin_token: Option<&str>,
    ) -> Self {
        Self::spawn(data_dir, database_url, admin_token, &[])
    }

    /// As [`Server::start_with_args`], the server's descriptor limit (soft and hard) set to
    /// `nofile`.
    pub fn start_with_nofile(data_dir: &Path, args: &[&str], nofile: u64) -> Self {
        Self::spawn_with(data_dir, None, Some(ADMIN), args, Some(nofile))
    }

    /// As [`Server::start`] on SQLite, running `program` (a copy of `picloud`).
    pub fn start_program(program: &Path, data_dir: &Path) -> Self {
        Self::spawn_program(program, data_dir, None, Some(ADMIN), &[], None)
    }

    fn spawn(
        data_dir: &Path,
        database_url: Option<&str>,
        admin_token: Option<&str>,
        args: &[&str],
    ) -> Self {
        Self::spawn_with(data_dir, database_url, admin_token, args, None)
    }

    fn spawn_with(
        data_dir: &Path,
        database_url: Option<&str>,
        admin_token: Option<&str>,
        args: &[&str],
        nofile: Option<u64>,
    ) -> Self {
        let program = Path::new(env!("CARGO_BIN_EXE_picloud"));
        Self::spawn_program(program, data_dir, database_url, admin_token, args, nofile)
    }

    fn spawn_program(
        program: &Path,
        data_dir: &Path,
        database_url: Option<&str>,
        admin_token: Option<&str>,
        args: &[&str],
        nofile: Option<u64>,
    ) -> Self {
        let mut cmd = Command::new(program);
        if let Some(nofile) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            // SAFETY: setrlimit is async-signal-safe; it runs in the child before exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--cache-dir")
            .arg(shared_cache())
            .args(args)
            .env_remove("PICLOUD_ADMIN_TOKEN")
            .env_remove("PICLOUD_DATABASE_URL")
            .stdout(Stdio::piped());
        if let Some(token) = admin_token {
            cmd.env("PICLOUD_ADMIN_TOKEN", token);
        }
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        let mut child = cmd.spawn().expect("picloud serve starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stdout = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = loop {
            assert!(Instant::now() < deadline, "no 'listening' line: {stdout:?}");
            let Some(line) = lines.next() else {
                panic!("the server exited before listening: {stdout:?}");
            };
            let line = line.expect("utf-8");
            if let Some(addr) = line.strip_prefix("PiCloud listening on http://") {
                break addr.to_string();
            }
            stdout.push(line);
        };
        // Keep reading so that the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            addr,
            stdout,
            data_dir: data_dir.to_path_buf(),
            database_url: database_url.map(str::to_string),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on the server this test started.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "exit after SIGTERM: {status:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same server again after [`Server::stop`].
    pub fn restart_stopped(&self) -> Self {
        Self::start(&self.data_dir.clone(), self.database_url.clone().as_deref())
    }

    /// The same server again on the same data.
    pub fn restart(mut self) -> Self {
        self.stop();
        Self::start(&self.data_dir.clone(), self.database_url.clone().as_deref())
    }
}

/// A fresh PostgreSQL database for one test; its URL.
pub fn fresh_pg() -> String {
    block_on(picloud_store::testing::fresh_pg_database())
}

/// Terminates every connection to the database of `url` (as an operator's restart would).
/// Returns how many were terminated.
pub fn terminate_connections(url: &str) -> i64 {
    let db = url.rsplit('/').next().expect("database name").to_string();
    let admin = pg_admin_url();
    block_on(async {
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect");
        let rows: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(db)
        .fetch_all(&mut conn)
        .await
        .expect("terminate");
        rows.into_iter().filter(|t| *t).count() as i64
    })
}

/// Runs a future to completion on a runtime of its own (the tests are synchronous).
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain HTTP client that hands back every status with its body.
pub struct Http {
    agent: ureq::Agent,
    base: String,
}

/// A body to send.
pub enum Body<'a> {
    None,
    Json(Value),
    /// Raw bytes with a content type.
    Raw(&'a str, &'a [u8]),
}

impl Http {
    pub fn new(server: &Server) -> Self {
        Self::at(&format!("http://{}", server.addr))
    }

    /// A client of `base` (`http://host:port`).
    pub fn at(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self {
            agent,
            base: base.to_string(),
        }
    }

    /// Sends `method path` with an optional bearer token; returns the status, the body as
    /// JSON (`Value::String` when it is not JSON) and the content type.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Body) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        let response = match body {
            Body::None => {
                let mut r = match method {
                    "GET" => self.agent.get(&url),
                    "DELETE" => self.agent.delete(&url),
                    "HEAD" => self.agent.head(&url),
                    "OPTIONS" => self.agent.options(&url),
                    // A body-carrying method sent without a body.
                    _ => {
                        let mut r = match method {
                            "PUT" => self.agent.put(&url),
                            "PATCH" => self.agent.patch(&url),
                            _ => self.agent.post(&url),
                        };
                        if let Some(a) = &auth {
                            r = r.header("Authorization", a);
                        }
                        return read(r.send_empty());
                    }
                };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            Body::Json(v) => {
                let mut r = self.with_body(method, &url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send_json(&v)
            }
            Body::Raw(content_type, bytes) => {
                let mut r = self
                    .with_body(method, &url)
                    .header("Content-Type", content_type);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(bytes)
            }
        };
        read(response)
    }

    fn with_body(
        &self,
        method: &str,
        url: &str,
    ) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        match method {
            "PUT" => self.agent.put(url),
            "PATCH" => self.agent.patch(url),
            _ => self.agent.post(url),
        }
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call("GET", path, token, Body::None)
    }

    /// The message of the record of an endpoint's failed answer `error` (its `invocation` id),
    /// as the tenant reads it, waiting for the record to be written; the answer itself must
    /// not hold it (a public function's caller sees no script text).
    pub fn record_message(&self, tenant: &str, function: &str, error: &Value) -> String {
        let id = error["error"]["invocation"]
            .as_i64()
            .unwrap_or_else(|| panic!("no invocation id in {error}"));
        let path = format!("/api/v1/tenants/{tenant}/functions/{function}/invocations?limit=1000");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (s, list) = self.get(&path, Some(ADMIN));
            assert_eq!(s, 200, "{list}");
            let found = list
                .as_array()
                .and_then(|l| l.iter().find(|r| r["id"].as_i64() == Some(id)));
            if let Some(record) = found {
                let message = record["message"].as_str().unwrap_or_default().to_string();
                let shown = error["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.is_empty() || !shown.contains(&message),
                    "the answer shows the record's message: {error}"
                );
                return message;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no record {id} of {tenant}/{function}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path` with an `Authorization` header exactly as given.
    pub fn get_authorized(&self, path: &str, authorization: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        read(
            self.agent
                .get(&url)
                .header("Authorization", authorization)
                .call(),
        )
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call("POST", path, token, Body::Json(body))
    }
}

fn read(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = response.expect("the server answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// `promtool check metrics` accepts the exposition (Debian's `prometheus` package; the
/// project's set-up installs it, and its absence fails the test).
pub fn promtool_accepts(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is required (scripts/setup installs prometheus): {e}")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real Caddy on a loopback port, killed when dropped.
pub struct Caddy {
    pub child: Child,
    pub base: String,
    pub port: u16,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Caddy {
    /// Starts `caddy run` on the project's `caddy/<file>` with `env`, serving plain HTTP on a
    /// free loopback port, and waits until it listens.
    pub fn start(file: &str, env: &[(&str, &str)], dir: &Path) -> Self {
        let caddyfile = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../caddy")
            .join(file);
        let port = free_port();
        let child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&caddyfile)
            .env("PICLOUD_SITE", format!("http://127.0.0.1:{port}"))
            // Tenants' own hosts on the same port (`*.localhost` is loopback).
            .env(
                "PICLOUD_FUNCTIONS_SITE",
                format!("http://*.localhost:{port}"),
            )
            .envs(env.iter().copied())
            .env("XDG_DATA_HOME", dir.join("caddy-data"))
            .env("XDG_CONFIG_HOME", dir.join("caddy-config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("caddy.log")).expect("caddy.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("caddy is required (scripts/setup installs it): {e}"));
        let caddy = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "caddy did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        caddy
    }
}

/// A binary of another package of the workspace (the cluster's), next to this test's own:
/// `cargo build --workspace` builds them.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace (`cargo build --workspace`) first",
        path.display()
    );
    path
}

/// How many runs each tick left in the key-value store, from its `run-<tick>-<random>` keys.
pub fn runs_by_tick(keys: Vec<String>) -> std::collections::BTreeMap<i64, usize> {
    let mut by_tick = std::collections::BTreeMap::new();
    for key in keys {
        let tick: i64 = key
            .split('-')
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("unexpected key {key}"));
        *by_tick.entry(tick).or_insert(0) += 1;
    }
    by_tick
}

/// [`runs_by_tick`] of the keys in the key-value store of the PostgreSQL database at `url`.
pub fn pg_keys(url: &str) -> std::collections::BTreeMap<i64, usize> {
    runs_by_tick(block_on(async {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query_scalar("SELECT key FROM kv WHERE key LIKE 'run-%'")
            .fetch_all(&mut conn)
            .await
            .expect("keys")
    }))
}

/// `GET path` from `addr` (`host:port`) with the `Host` header `host` (a tenant's own host:
/// this client's resolver does not resolve `*.localhost` as browsers and curl do), over a
/// connection of its own; the status, the headers (lower-case names, in order) and the body.
pub fn get_on_host(addr: &str, host: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// `method path` with `body`, written from a thread of its own while the answer is read, as
/// curl does: a server may answer a body past its cap from the declared length alone and close,
/// and a client that writes everything before it reads (ureq) then meets a reset instead of
/// the answer. The status and the JSON body (a string when it is not JSON).
pub fn send_while_reading(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n{auth}Connection: close\r\n\r\n",
        body.len()
    )
    .expect("send the head");
    let mut writer = stream.try_clone().expect("clone");
    // The server may stop reading at any point: what it did not read is not an error here.
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after the answer (the unread body) ends the reading, not the test.
            Err(e) if !raw.is_empty() => {
                eprintln!("after {} bytes of answer: {e}", raw.len());
                break;
            }
            Err(e) => panic!("no answer to {method} {path}: {e}"),
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sending.join();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a head and a body in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line in {head:?}"));
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(rest.len());
    let body = &rest[..length.min(rest.len())];
    let value = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    (status, value)
}
