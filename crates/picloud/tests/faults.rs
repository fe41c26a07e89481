//! Faults under load (issue 9): SIGTERM while clients are sending, a private PostgreSQL
//! restarted under the server, and the SQLite file's disk filled up. In each, every answer is a
//! whole answer or a clear error, every invocation answered 200 has its record, no acknowledged
//! deploy is lost, and the database is intact afterwards.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{ADMIN, Http, Server, data_dir, free_port};
use serde_json::{Value, json};
use sqlx::Connection;

const ADMIN_AUTH: Option<&str> = Some(ADMIN);

/// What clients saw of one load: counts by answer (`200`, `503 unavailable`, `transport`, …).
#[derive(Debug, Default)]
struct Answers {
    by_kind: std::collections::BTreeMap<String, u64>,
    /// Answers that were 200 but not the function's whole body.
    mangled: Vec<String>,
}

impl Answers {
    fn ok(&self) -> u64 {
        self.by_kind.get("200").copied().unwrap_or(0)
    }
}

/// `clients` threads sending GETs to `url` until `stop`; a 200 must carry `expect` in full.
fn load(
    url: String,
    clients: usize,
    expect: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Answers> {
    std::thread::spawn(move || {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let (url, stop) = (url.clone(), stop.clone());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(30)))
                        .build()
                        .into();
                    let mut answers = Answers::default();
                    while !stop.load(Ordering::Relaxed) {
                        let kind = match agent.get(&url).call() {
                            Ok(mut r) => {
                                let status = r.status().as_u16();
                                let body = r.body_mut().read_to_string().unwrap_or_default();
                                if status == 200 {
                                    if !body.starts_with(expect) {
                                        answers.mangled.push(body);
                                    }
                                    "200".to_string()
                                } else {
                                    let kind = serde_json::from_str::<Value>(&body)
                                        .ok()
                                        .and_then(|v| {
                                            v["error"]["kind"].as_str().map(str::to_string)
                                        })
                                        .unwrap_or_else(|| format!("untyped: {body}"));
                                    format!("{status} {kind}")
                                }
                            }
                            Err(_) => {
                                // Refused or reset: the server is going away. Back off a little.
                                std::thread::sleep(Duration::from_millis(20));
                                "transport".to_string()
                            }
                        };
                        *answers.by_kind.entry(kind).or_default() += 1;
                    }
                    answers
                })
            })
            .collect();
        let mut all = Answers::default();
        for t in threads {
            let a = t.join().expect("client thread");
            for (k, n) in a.by_kind {
                *all.by_kind.entry(k).or_default() += n;
            }
            all.mangled.extend(a.mangled);
        }
        all
    })
}

fn setup(http: &Http, source: &str) {
    let (s, b) = http.post("/api/v1/tenants", ADMIN_AUTH, json!({ "name": "acme" }));
    assert_eq!(s, 201, "{b}");
    let (s, b) = http.post(
        "/api/v1/tenants/acme/functions",
        ADMIN_AUTH,
        json!({ "name": "f", "source": source, "deploy": true }),
    );
    assert_eq!(s, 201, "{b}");
}

/// A little work, so that invocations are in flight when the fault comes.
const WORK: &str =
    r#"fn handle(req) { let n = 0; while n < 20000 { n += 1; } `whole answer ${n}` }"#;

fn sqlite_count(db: &Path, sql: &str) -> i64 {
    let url = format!("sqlite://{}?mode=ro", db.display());
    common::block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&mut conn)
            .await
            .expect("count")
    })
}

fn sqlite_integrity(db: &Path) -> String {
    let url = format!("sqlite://{}?mode=ro", db.display());
    common::block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query_scalar::<_, String>("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .expect("integrity_check")
    })
}

#[test]
fn sigterm_under_load_answers_what_it_took_and_writes_every_record() {
    let dir = data_dir("fault-sigterm");
    let mut server = Server::start_with_args(&dir, &["--function-rate", "0", "--tenant-rate", "0"]);
    setup(&Http::new(&server), WORK);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(
        server.url("/fn/acme/f"),
        6,
        "whole answer 20000",
        stop.clone(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    server.stop(); // SIGTERM; asserts a clean exit within 20 s
    stop.store(true, Ordering::Relaxed);
    let answers = clients.join().expect("clients");
    eprintln!("answers around SIGTERM: {:?}", answers.by_kind);
    assert!(
        answers.mangled.is_empty(),
        "half answers: {:?}",
        answers.mangled
    );
    assert!(
        answers.ok() > 20,
        "too little load before SIGTERM: {answers:?}"
    );
    let unexpected: Vec<_> = answers
        .by_kind
        .keys()
        .filter(|k| !matches!(k.as_str(), "200" | "transport" | "503 unavailable"))
        .collect();
    assert!(unexpected.is_empty(), "unexpected answers: {answers:?}");

    // Nothing half-written: no record is left in the spool (the segment the next start would
    // append to is empty), the database is intact, and every answered invocation has its
    // record (none for what was not answered).
    let spooled: Vec<_> = std::fs::read_dir(dir.join("records-spool"))
        .expect("the spool directory")
        .filter_map(Result::ok)
        .filter(|e| e.metadata().map_or(true, |m| m.len() > 0))
        .map(|e| e.path())
        .collect();
    assert!(spooled.is_empty(), "records left in the spool: {spooled:?}");
    let db = dir.join("picloud.db");
    assert_eq!(sqlite_integrity(&db), "ok");
    let records = sqlite_count(&db, "SELECT COUNT(*) FROM invocations");
    assert_eq!(records, answers.ok() as i64, "records vs 200 answers");
}

/// A PostgreSQL server of this test's own (initdb, pg_ctl), so that restarting it disturbs no
/// other test. Run as the `postgres` user: PostgreSQL refuses to run as root.
struct PrivatePg {
    dir: PathBuf,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's binaries in /usr/lib/postgresql (scripts/setup installs them)");
    let mut found: Vec<PathBuf> = versions
        .filter_map(Result::ok)
        .map(|v| v.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql"))
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

impl PrivatePg {
    fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("picloud-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pg dir");
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(chown.success());
        let out = as_postgres(&pg_bin("initdb"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"])
            .arg(dir.join("data"))
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self {
            dir,
            port: free_port(),
        };
        pg.ctl(&["start"]);
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn ctl(&self, action: &[&str]) {
        let out = as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.display()
            ))
            .args(["-w", "-t", "60", "-m", "fast"])
            .args(action)
            .stdout(Stdio::piped())
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {action:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pg_count(url: &str, sql: &str) -> i64 {
    common::block_on(async {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&mut conn)
            .await
            .expect("count")
    })
}

#[test]
fn postgres_restarted_under_load_loses_no_deploy_and_no_record() {
    let pg = PrivatePg::start("restart");
    let dir = data_dir("fault-pg-restart");
    let server = Server::start_on(
        &dir,
        Some(&pg.url()),
        &["--function-rate", "0", "--tenant-rate", "0"],
    );
    let http = Http::new(&server);
    setup(&http, WORK);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(server.url("/fn/acme/f"), 4, "whole answer", stop.clone());

    // Deploys keep coming while PostgreSQL goes down and up: each is acknowledged (201), maybe
    // late, or refused with a clear 503, never lost once acknowledged.
    let deployer = {
        let (base, stop) = (server.url(""), stop.clone());
        std::thread::spawn(move || {
            let http = Http::at(&base);
            let (mut acknowledged, mut refused, mut other) = (Vec::new(), 0u32, Vec::new());
            let mut slowest = Duration::ZERO;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let source = format!(
                    r#"fn handle(req) {{ let n = 0; while n < 20000 {{ n += 1; }} `whole answer ${{n}} v{n}` }}"#
                );
                let sent = Instant::now();
                let (s, b) = http.post(
                    "/api/v1/tenants/acme/functions/f/versions",
                    ADMIN_AUTH,
                    json!({ "source": source, "deploy": true }),
                );
                slowest = slowest.max(sent.elapsed());
                match s {
                    201 => acknowledged.push(n),
                    503 if b["error"]["kind"] == "unavailable" => refused += 1,
                    _ => other.push(format!("{s} {b}")),
                }
                std::thread::sleep(Duration::from_millis(150));
            }
            (acknowledged, refused, other, slowest)
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // Down for two seconds (a bare restart takes a quarter of one, too short for a deploy to
    // meet it), then up again.
    pg.ctl(&["stop"]);
    std::thread::sleep(Duration::from_secs(2));
    pg.ctl(&["start"]);
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let answers = clients.join().expect("clients");
    let (acknowledged, refused, other, slowest) = deployer.join().expect("deployer");
    eprintln!(
        "answers: {:?}; deploys acknowledged {}, refused {refused}, slowest {slowest:?}",
        answers.by_kind,
        acknowledged.len()
    );
    assert!(
        answers.mangled.is_empty(),
        "half answers: {:?}",
        answers.mangled
    );
    assert!(
        other.is_empty(),
        "deploys answered neither 201 nor 503: {other:?}"
    );
    let unexpected: Vec<_> = answers
        .by_kind
        .keys()
        .filter(|k| !matches!(k.as_str(), "200" | "503 unavailable"))
        .collect();
    assert!(unexpected.is_empty(), "unexpected answers: {answers:?}");
    assert!(acknowledged.len() >= 5, "too few deploys: {acknowledged:?}");
    // A write that meets the outage waits for a connection (the pool's 30 s) and goes through
    // once the database is back, or is refused with 503 after that: either way it met it.
    assert!(
        refused > 0 || slowest >= Duration::from_secs(1),
        "no deploy met the outage (slowest {slowest:?}): the test did not test it"
    );

    // Every acknowledged deploy is a version in the database, and the last one is live. (A
    // deploy refused with 503 may still have been written: the client retries such a one.)
    let sources: Vec<String> = common::block_on(async {
        let mut conn = sqlx::PgConnection::connect(&pg.url())
            .await
            .expect("connect");
        sqlx::query_scalar("SELECT source FROM function_versions")
            .fetch_all(&mut conn)
            .await
            .expect("versions")
    });
    for n in &acknowledged {
        let marker = format!(" v{n}`");
        assert_eq!(
            sources.iter().filter(|s| s.contains(&marker)).count(),
            1,
            "acknowledged deploy v{n} is stored once"
        );
    }
    let last = acknowledged.last().copied().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probes = 0;
    loop {
        let (s, body) = http.get("/fn/acme/f", None);
        assert_eq!(s, 200, "{body}");
        probes += 1;
        let body = body.as_str().unwrap_or_default().to_string();
        if body.ends_with(&format!(" v{last}")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the last deploy (v{last}) is not live: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every 200 has its record (the probes just above too), written once the database was back.
    let expected = answers.ok() as i64 + probes;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let written = pg_count(&pg.url(), "SELECT COUNT(*) FROM invocations");
        if written >= expected {
            assert_eq!(written, expected, "records for 200 answers");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{written} records for {expected} answers"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A tmpfs of `size` mounted for one test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(name: &str, size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("picloud-disk-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "this test needs to mount a small tmpfs (root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills what is left of the disk holding `dir`; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_disk_under_sqlite_is_a_clear_error_and_corrupts_nothing() {
    let disk = SmallDisk::mount("full", "8m");
    let dir = disk.0.join("data");
    std::fs::create_dir_all(&dir).expect("data dir");
    let server = Server::start_with_args(&dir, &["--function-rate", "0", "--tenant-rate", "0"]);
    let http = Http::new(&server);
    setup(&http, r#"fn handle(req) { "still answering" }"#);
    let filler = fill(&disk.0);

    // Writes are refused with a clear error; the function keeps answering.
    let mut refused = None;
    for i in 0..20 {
        let (s, b) = http.post(
            "/api/v1/tenants/acme/functions",
            ADMIN_AUTH,
            json!({ "name": format!("g{i}"), "source": format!("fn handle(req) {{ \"{}\" }}", "x".repeat(20_000)), "deploy": true }),
        );
        if s != 201 {
            refused = Some((s, b));
            break;
        }
    }
    let (s, b) = refused.expect("a write on a full disk was refused");
    assert_eq!(s, 507, "a full disk is 507: {b}");
    assert_eq!(b["error"]["kind"], "storage_full", "{b}");
    let message = b["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("full"), "{message}");
    let mut served = 0;
    for _ in 0..50 {
        let (s, b) = http.get("/fn/acme/f", None);
        assert_eq!((s, b.as_str()), (200, Some("still answering")), "{b}");
        served += 1;
    }
    let (s, b) = http.get("/healthz", None);
    assert_eq!(s, 200, "{b}");

    // Space back: writes work again, and the records kept meanwhile are written.
    std::fs::remove_file(&filler).expect("free the disk");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, b) = http.post(
            "/api/v1/tenants/acme/functions",
            ADMIN_AUTH,
            json!({ "name": "after", "source": "fn handle(req) { \"after\" }", "deploy": true }),
        );
        if s == 201 {
            break;
        }
        assert!(Instant::now() < deadline, "writes did not recover: {s} {b}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (s, b) = http.get("/fn/acme/after", None);
    assert_eq!((s, b.as_str()), (200, Some("after")), "{b}");
    let mut server = server;
    server.stop();
    let db = dir.join("picloud.db");
    assert_eq!(sqlite_integrity(&db), "ok");
    let records = sqlite_count(
        &db,
        "SELECT COUNT(*) FROM invocations i JOIN functions f ON f.id = i.function_id WHERE f.name = 'f'",
    );
    eprintln!("{served} invocations on a full disk, {records} records of them written afterwards");
    assert_eq!(
        records, served,
        "every invocation made on the full disk has its record"
    );
}
