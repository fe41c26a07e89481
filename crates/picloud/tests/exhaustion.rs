//! No one can exhaust the server (issue 19), tried against `picloud serve` alone as an attacker
//! would: slow and silent clients, a flood of connections from one address under a small
//! descriptor limit, stalled bodies, and a private function's body sent without a token. Every
//! connection here is on loopback, bounded in number, and closed by the test's end.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{ADMIN, Http, Server, data_dir};
use serde_json::json;

/// A connection to `server` from `source` (any address of 127/8 is this host).
fn connect_from(source: &str, server: &str) -> TcpStream {
    let source: SocketAddr = format!("{source}:0").parse().expect("source address");
    let server: SocketAddr = server.parse().expect("server address");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&source.into())
        .expect("bind the source address");
    socket.connect(&server.into()).expect("connect");
    socket.into()
}

/// What the server sends on `stream` until it closes it, or `None` if it is still open after
/// `wait`.
fn until_closed(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&got).into_owned());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(e) => panic!("reading: {e}"),
        }
    }
}

/// The status line's code of a raw answer.
fn status_of(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn setup(http: &Http) {
    let (s, b) = http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "t1" }));
    assert_eq!(s, 201, "{b}");
    for (name, public) in [("f", true), ("p", false)] {
        let (s, b) = http.post(
            "/api/v1/tenants/t1/functions",
            Some(ADMIN),
            json!({
                "name": name,
                "public": public,
                "source": "fn handle(req) { `got ${req.body.len()}` }",
                "deploy": true,
            }),
        );
        assert_eq!(s, 201, "{b}");
    }
}

/// 260 half-open requests from one address under a descriptor limit of 256 (before: all held,
/// and new clients got no answer); slow heads, a byte at a time, silent connections and idle
/// ones (before: all held past 45 s). Now one address holds at most its cap, the rest are
/// answered 503 at once; a normal client is answered throughout; each slow connection is
/// closed when its timeout passes.
#[test]
fn slow_clients_cannot_hold_the_server() {
    let server = Server::start_with_nofile(
        &data_dir("exhaust-slow"),
        &[
            "--header-read-timeout",
            "2",
            "--idle-timeout",
            "3",
            "--max-connections-per-client",
            "40",
        ],
        256,
    );
    let http = Http::new(&server);
    setup(&http);

    // All at once: the held ones are closed after 2 s, and their places taken again.
    let mut flood: Vec<TcpStream> = (0..260)
        .map(|_| {
            let mut stream = connect_from("127.0.0.2", &server.addr);
            // A head that never ends.
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            stream
        })
        .collect();

    // A trickle, a byte every 300 ms, and a silent connection, from other addresses.
    let mut trickle = connect_from("127.0.0.3", &server.addr);
    let trickler = {
        let mut writer = trickle.try_clone().expect("clone");
        std::thread::spawn(move || {
            for byte in b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: aaaaaaaaaaaaaaaaaaaaaaaa"
            {
                if writer.write_all(&[*byte]).is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            false
        })
    };
    let mut silent = connect_from("127.0.0.4", &server.addr);

    // Meanwhile a normal client is answered, on the API and on an endpoint.
    for _ in 0..5 {
        let (s, b) = http.get("/healthz", None);
        assert_eq!(s, 200, "{b}");
        let (s, _) = http.call("GET", "/fn/t1/f", None, common::Body::None);
        assert_eq!(s, 200);
    }

    // Past the cap each is answered 503 at once; the ones held are closed without an answer
    // once their header timeout (2 s) passed. All within 10 s.
    let mut refused = 0;
    for (i, stream) in flood.iter_mut().enumerate() {
        let answer = until_closed(stream, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("connection {i} of the flood is still open"));
        match status_of(&answer) {
            Some(503) => refused += 1,
            _ => assert_eq!(answer, "", "connection {i}"),
        }
    }
    assert!(
        refused >= 220,
        "one address holds at most its 40 places, the rest are answered 503: {refused} refused"
    );
    assert!(
        until_closed(&mut trickle, Duration::from_secs(10)).is_some(),
        "the trickle is still open"
    );
    assert!(
        trickler.join().expect("trickler"),
        "the trickle was cut before its head ended"
    );
    assert!(
        until_closed(&mut silent, Duration::from_secs(10)).is_some(),
        "the silent connection is still open"
    );

    // A keep-alive connection after one answer: open for a while, closed after the idle
    // timeout (3 s).
    let mut idle = connect_from("127.0.0.5", &server.addr);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    idle.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut first = [0u8; 1024];
    let n = idle.read(&mut first).expect("an answer");
    assert_eq!(status_of(&String::from_utf8_lossy(&first[..n])), Some(200));
    assert!(
        until_closed(&mut idle, Duration::from_secs(10)).is_some(),
        "the idle connection is still open"
    );

    // And the server still answers.
    let (s, b) = http.get("/healthz", None);
    assert_eq!(s, 200, "{b}");
}

/// Request bodies: a private function's body is read only after its token is checked (before:
/// the server read 1 MiB from anyone first); bodies in flight are bounded (before: 150 stalled
/// 1 MiB bodies took the server from 52 to 204 MiB); a stalled body is answered 408 after the
/// body timeout.
#[test]
fn bodies_are_bounded_and_wait_for_the_token() {
    let server = Server::start_with_args(
        &data_dir("exhaust-bodies"),
        &[
            "--body-read-timeout",
            "2",
            "--max-bodies-in-flight",
            &(3u64 << 20).to_string(),
        ],
    );
    let http = Http::new(&server);
    setup(&http);

    let stalled_head = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n0123456789",
            (1u64 << 20) - 1
        )
    };

    // No token, no body: 404 (as if missing) at once, not a wait for the body nor a 408.
    let mut private = TcpStream::connect(&server.addr).expect("connect");
    private
        .write_all(stalled_head("/fn/t1/p").as_bytes())
        .expect("write");
    let answer = until_closed(&mut private, Duration::from_secs(10)).unwrap_or_default();
    assert_eq!(status_of(&answer), Some(404), "{answer}");
    drop(private);

    // Three stalled bodies of 1 MiB take the budget of 3 MiB; a fourth is refused at once.
    let mut stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(&server.addr).expect("connect");
            s.write_all(stalled_head("/fn/t1/f").as_bytes())
                .expect("write");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = TcpStream::connect(&server.addr).expect("connect");
    fourth
        .write_all(stalled_head("/fn/t1/f").as_bytes())
        .expect("write");
    let answer = until_closed(&mut fourth, Duration::from_secs(10)).unwrap_or_default();
    assert_eq!(status_of(&answer), Some(503), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("\"overloaded\""), "{answer}");

    // The stalled ones get 408 once their body timeout passes.
    for (i, s) in stalled.iter_mut().enumerate() {
        let answer = until_closed(s, Duration::from_secs(10)).unwrap_or_default();
        assert_eq!(status_of(&answer), Some(408), "stalled body {i}: {answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
    }

    // Clients that vanish mid-body (with a NUL, invalid UTF-8 and control bytes sent first)
    // give their share of the budget back: three more stalled bodies fit again afterwards.
    for _ in 0..3 {
        let mut gone = TcpStream::connect(&server.addr).expect("connect");
        gone.write_all(stalled_head("/fn/t1/f").as_bytes())
            .expect("write");
        gone.write_all(b"\0\xff\xfe\x01\r\n").expect("write");
        drop(gone);
    }
    std::thread::sleep(Duration::from_millis(300));
    let refilled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(&server.addr).expect("connect");
            s.write_all(stalled_head("/fn/t1/f").as_bytes())
                .expect("write");
            s
        })
        .collect();
    for mut s in refilled {
        let answer = until_closed(&mut s, Duration::from_secs(10)).unwrap_or_default();
        assert_eq!(status_of(&answer), Some(408), "a refilled place: {answer}");
    }

    // The budget is back: a whole body goes through.
    let body = "x".repeat(100_000);
    let (s, b) = http.call(
        "POST",
        "/fn/t1/f",
        None,
        common::Body::Raw("text/plain", body.as_bytes()),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!("got 100000"));
}

/// The live admin tokens, as `(id, secret-less name)`.
fn live_admins(http: &Http, token: &str) -> Vec<i64> {
    let (s, list) = http.get("/api/v1/admin/tokens", Some(token));
    assert_eq!(s, 200, "{list}");
    list.as_array()
        .expect("a list")
        .iter()
        .filter(|t| t["revoked_at"].is_null())
        .map(|t| t["id"].as_i64().expect("an id"))
        .collect()
}

/// Two admin tokens revoked at once, ten times over, on each database (before: both answered
/// 204 and no admin was left). Now the revocations take turns in the store: one is refused and
/// one admin token is always left.
fn revocations_at_once_leave_an_admin(http: &Http) {
    let mut survivor = ADMIN.to_string();
    for round in 0..10 {
        let (s, made) = http.post(
            "/api/v1/admin/tokens",
            Some(&survivor),
            json!({ "name": format!("second-{round}") }),
        );
        assert_eq!(s, 201, "{made}");
        let second = made["token"].as_str().expect("a secret").to_string();
        let ids = live_admins(http, &survivor);
        assert_eq!(ids.len(), 2, "round {round}: {ids:?}");
        let barrier = std::sync::Barrier::new(2);
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let calls: Vec<_> = ids
                .iter()
                .map(|id| {
                    let (barrier, survivor) = (&barrier, &survivor);
                    scope.spawn(move || {
                        barrier.wait();
                        http.call(
                            "DELETE",
                            &format!("/api/v1/admin/tokens/{id}"),
                            Some(survivor),
                            common::Body::None,
                        )
                        .0
                    })
                })
                .collect();
            calls
                .into_iter()
                .map(|c| c.join().expect("a call"))
                .collect()
        });
        assert_eq!(
            statuses.iter().filter(|s| **s == 204).count(),
            1,
            "round {round}: exactly one revocation goes through: {statuses:?}"
        );
        // The other is refused by the store (409), or by the token check if its own token
        // went first (401).
        assert!(
            statuses.iter().all(|s| [204, 401, 409].contains(s)),
            "round {round}: {statuses:?}"
        );
        survivor = [survivor, second]
            .into_iter()
            .find(|t| http.get("/api/v1/admin/tokens", Some(t)).0 == 200)
            .expect("one admin token still works");
        assert_eq!(live_admins(http, &survivor).len(), 1, "round {round}");
    }
}

#[test]
fn the_last_admin_token_survives_revocations_at_once_on_sqlite() {
    let server = Server::start(&data_dir("exhaust-admins"), None);
    revocations_at_once_leave_an_admin(&Http::new(&server));
}

#[test]
fn the_last_admin_token_survives_revocations_at_once_on_postgres() {
    let server = Server::start(&data_dir("exhaust-admins-pg"), Some(&common::fresh_pg()));
    revocations_at_once_leave_an_admin(&Http::new(&server));
}

/// A start whose `PICLOUD_ADMIN_TOKEN` was revoked, when no admin token is left (by hand in the
/// database: the API never leaves none), says what to do (before: "token already exists");
/// a start without it makes a new one and prints it.
#[test]
fn a_revoked_admin_token_chosen_again_says_what_to_do() {
    let dir = data_dir("exhaust-revoked-admin");
    let mut server = Server::start(&dir, None);
    server.stop();
    common::block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.join("picloud.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query("UPDATE tokens SET revoked_at = 1 WHERE admin")
            .execute(&mut db)
            .await
            .expect("revoke by hand");
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .arg("--cache-dir")
        .arg(common::shared_cache())
        .env("PICLOUD_ADMIN_TOKEN", ADMIN)
        .env_remove("PICLOUD_DATABASE_URL")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("PICLOUD_ADMIN_TOKEN is a token this installation has already had")
            && stderr.contains("choose a new one, or unset it"),
        "{stderr}"
    );
    let server = Server::start_with(&dir, None, None);
    let printed = server.stdout.join("\n");
    let token = printed
        .split_whitespace()
        .find(|w| w.starts_with("pc_"))
        .unwrap_or_else(|| panic!("a new admin token printed: {printed}"));
    assert_eq!(
        Http::new(&server)
            .get("/api/v1/admin/tokens", Some(token))
            .0,
        200
    );
}

/// The ids a tenant sees (its tokens, schedules, invocation records) do not count the other
/// tenants' (before: global sequences; a tenant read how many tokens, schedules and invocations
/// others had from the gaps between its own ids).
#[test]
fn ids_say_nothing_of_other_tenants() {
    let server = Server::start(&data_dir("exhaust-ids"), Some(&common::fresh_pg()));
    let http = Http::new(&server);
    let mut ids: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
    for tenant in ["a", "b"] {
        let (s, b) = http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": tenant }));
        assert_eq!(s, 201, "{b}");
        let (s, b) = http.post(
            &format!("/api/v1/tenants/{tenant}/functions"),
            Some(ADMIN),
            json!({
                "name": "f",
                "public": true,
                "source": "fn handle(req) { 1 }\nfn on_schedule(e) { 1 }",
                "deploy": true,
            }),
        );
        assert_eq!(s, 201, "{b}");
    }
    // Interleaved: a, b, a for each kind of id.
    for (n, tenant) in ["a", "b", "a"].into_iter().enumerate() {
        let (s, made) = http.post(
            &format!("/api/v1/tenants/{tenant}/tokens"),
            Some(ADMIN),
            json!({ "name": format!("t{n}") }),
        );
        assert_eq!(s, 201, "{made}");
        ids.entry("token")
            .or_default()
            .push(made["id"].as_i64().expect("id"));
        let (s, made) = http.post(
            &format!("/api/v1/tenants/{tenant}/functions/f/schedules"),
            Some(ADMIN),
            json!({ "cron": "0 0 1 1 *" }),
        );
        assert_eq!(s, 201, "{made}");
        ids.entry("schedule")
            .or_default()
            .push(made["id"].as_i64().expect("id"));
        assert_eq!(http.get(&format!("/fn/{tenant}/f"), None).0, 200);
    }
    // Records are written in batches, a tenth of a second apart.
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let (s, a) = http.get("/api/v1/tenants/a/functions/f/invocations", Some(ADMIN));
        assert_eq!(s, 200, "{a}");
        let a: Vec<i64> = a
            .as_array()
            .expect("records")
            .iter()
            .map(|r| r["id"].as_i64().expect("id"))
            .collect();
        if a.len() == 2 || Instant::now() > deadline {
            break a;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(records.len(), 2, "a's two records");
    ids.insert("record", records);
    for (kind, ids) in &ids {
        assert!(
            ids.iter().all(|id| (1..1i64 << 53).contains(id)),
            "{kind}: {ids:?}"
        );
        let (first, last) = (ids[0], ids[ids.len() - 1]);
        assert!(
            (first - last).abs() > 1_000,
            "{kind}: a's two ids are no count of b's between them: {ids:?}"
        );
    }
}

/// The children of `pid` (of every thread).
fn children(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let path = task.expect("task").path().join("children");
        let list = std::fs::read_to_string(path).unwrap_or_default();
        all.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    all
}

/// The server's zygote, waiting for it to be there.
fn zygote_of(server: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = children(server).into_iter().find(|child| {
            std::fs::read(format!("/proc/{child}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("__picloud-zygote"))
        });
        if let Some(pid) = found {
            return pid;
        }
        assert!(Instant::now() < deadline, "no zygote under {server}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `/proc/{pid}/status` field.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("{name} in {status}"))
        .trim()
        .to_string()
}

/// The zygote is not dumpable and runs as a uid other than root; each worker has a data limit;
/// and a zygote started again after the binary on disk was replaced (an upgrade half done) is
/// the binary that is running, not the file now at its path (before: `current_exe()` by path).
#[test]
fn the_zygote_is_the_running_binary_and_trusts_nothing() {
    use std::os::unix::fs::MetadataExt;
    let dir = data_dir("exhaust-zygote");
    let program = dir.join("picloud-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_picloud"), &program).expect("copy the binary");
    let server = Server::start_program(&program, &dir.join("data"));
    let http = Http::new(&server);
    setup(&http);
    assert_eq!(http.get("/fn/t1/f", None).0, 200);

    let first = zygote_of(server.child.id());
    let uid: u32 = status_field(first, "Uid:")
        .split_whitespace()
        .next()
        .and_then(|u| u.parse().ok())
        .expect("a uid");
    assert_ne!(uid, 0, "the zygote does not run as root");
    let owner = std::fs::metadata(format!("/proc/{first}/status"))
        .expect("stat")
        .uid();
    assert_eq!(
        owner, 0,
        "a process that is not dumpable has its /proc files owned by root (its uid is {uid})"
    );
    // Warm workers come and go (each serves once): wait for one to read.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read: Vec<String> = children(first)
            .into_iter()
            .filter_map(|worker| std::fs::read_to_string(format!("/proc/{worker}/limits")).ok())
            .collect();
        if let Some(limits) = read.first() {
            let line = limits
                .lines()
                .find(|l| l.starts_with("Max data size"))
                .expect("a data size line");
            assert!(!line.contains("unlimited"), "a worker's {line}");
            break;
        }
        assert!(Instant::now() < deadline, "no warm worker under the zygote");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Replace the binary on disk with a script that leaves a mark, and kill the zygote.
    let mark = dir.join("the-new-file-ran");
    std::fs::remove_file(&program).expect("remove");
    std::fs::write(
        &program,
        format!("#!/bin/sh\ntouch {}\nexit 1\n", mark.display()),
    )
    .expect("write the script");
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    // SAFETY: kill(2) on the zygote this test's server started.
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, _) = http.call("GET", "/fn/t1/f", None, common::Body::None);
        let again = zygote_of(server.child.id());
        if s == 200 && again != first {
            let exe = std::fs::read_link(format!("/proc/{again}/exe")).expect("exe");
            assert!(
                exe.to_string_lossy().ends_with("(deleted)"),
                "the new zygote runs the original binary: {}",
                exe.display()
            );
            break;
        }
        assert!(Instant::now() < deadline, "no new zygote serves");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!mark.exists(), "the file now at the binary's path was run");
}

/// The data directory is its owner's alone, also one an older version left open, and so is
/// every file the server makes in it, from its creation (before: database and spool 0644,
/// folders 0755).
#[test]
fn files_at_rest_are_the_servers_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir("exhaust-files");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let server = Server::start(&dir, None);
    let http = Http::new(&server);
    setup(&http);
    assert_eq!(http.get("/fn/t1/f", None).0, 200);
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&dir), 0o700, "the data directory");
    let mut seen = 0;
    let mut stack = vec![dir.clone()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).expect("read") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                stack.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
            }
            seen += 1;
        }
    }
    assert!(
        dir.join("picloud.db").exists() && dir.join("records-spool").exists(),
        "the database and the spool are among the {seen} checked"
    );
}

/// Four requests at once to a function that computes for half a second, against an executor
/// capped at two running invocations, then at memory for one (before: no machine-wide cap;
/// every tenant's invocations together could take more memory than the machine has).
#[test]
fn the_executor_caps_invocations_machine_wide() {
    for (args, expected_ok) in [
        // The tenant's own concurrency chosen above the caps, so that the executor's is hit.
        (
            vec![
                "--max-running-invocations",
                "2",
                "--tenant-concurrency",
                "8",
            ],
            2,
        ),
        // 100 MiB holds one invocation of 64 MiB.
        (
            vec![
                "--max-invocation-memory",
                "104857600",
                "--tenant-concurrency",
                "8",
            ],
            1,
        ),
    ] {
        let server = Server::start_with_args(&data_dir("exhaust-caps"), &args);
        let http = Http::new(&server);
        let (s, b) = http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "t1" }));
        assert_eq!(s, 201, "{b}");
        let (s, b) = http.post(
            "/api/v1/tenants/t1/functions",
            Some(ADMIN),
            json!({
                "name": "spin",
                "public": true,
                "source": "fn handle(req) { let t = timestamp(); while t.elapsed < 0.5 {} \"done\" }",
                "limits": { "fuel": 10_000_000_000u64 },
                "deploy": true,
            }),
        );
        assert_eq!(s, 201, "{b}");
        let barrier = std::sync::Barrier::new(4);
        let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
            let calls: Vec<_> = (0..4)
                .map(|_| {
                    let barrier = &barrier;
                    let addr = server.addr.clone();
                    scope.spawn(move || {
                        barrier.wait();
                        let mut stream = TcpStream::connect(&addr).expect("connect");
                        stream
                            .write_all(
                                b"GET /fn/t1/spin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                            )
                            .expect("write");
                        let answer =
                            until_closed(&mut stream, Duration::from_secs(20)).expect("an answer");
                        (status_of(&answer).unwrap_or(0), answer)
                    })
                })
                .collect();
            calls
                .into_iter()
                .map(|c| c.join().expect("a call"))
                .collect()
        });
        let ok = answers.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(ok, expected_ok, "{args:?}: {answers:?}");
        for (status, answer) in answers.iter().filter(|(s, _)| *s != 200) {
            assert_eq!(*status, 503, "{args:?}: {answer}");
            assert!(answer.contains("\"overloaded\""), "{answer}");
            assert!(
                answer.to_ascii_lowercase().contains("retry-after: 1"),
                "{answer}"
            );
        }
        // The caps are given back: one at a time, every request is answered.
        for _ in 0..3 {
            assert_eq!(http.get("/fn/t1/spin", None).0, 200);
        }
    }
}

/// A script of exactly `bytes` bytes.
fn script_of(bytes: usize) -> String {
    let head = "fn handle(r) { 1 }\n// ";
    format!("{head}{}", "x".repeat(bytes - head.len()))
}

/// Versions within quotas (before: 100 versions of 256 KiB in a second, about 256 GiB allowed
/// per tenant): a function keeps at most its count, pruning its oldest versions but never the
/// live one nor its newest ten; a tenant's versions are held to their bytes, past which a save
/// is refused `409 quota_exceeded` naming the quota, while another tenant saves as before.
#[test]
fn versions_are_held_to_their_quotas() {
    let server = Server::start_with_args(
        &data_dir("exhaust-versions"),
        &[
            "--tenant-version-bytes",
            "300000",
            "--versions-per-function",
            "20",
        ],
    );
    let http = Http::new(&server);
    for tenant in ["a", "b"] {
        let (s, b) = http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": tenant }));
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = http.post(
        "/api/v1/tenants/a/functions",
        Some(ADMIN),
        json!({ "name": "f", "public": true, "source": "fn handle(r) { \"live\" }", "deploy": true }),
    );
    assert_eq!(s, 201, "{b}");
    for _ in 0..60 {
        let (s, b) = http.post(
            "/api/v1/tenants/a/functions/f/versions",
            Some(ADMIN),
            json!({ "source": script_of(10_000) }),
        );
        assert_eq!(s, 201, "{b}");
    }
    let (s, list) = http.get("/api/v1/tenants/a/functions/f/versions", Some(ADMIN));
    assert_eq!(s, 200, "{list}");
    let kept: Vec<i64> = list
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_i64().expect("a number"))
        .collect();
    assert_eq!(kept.len(), 20, "{kept:?}");
    assert_eq!(kept[0], 1, "the live version is kept: {kept:?}");
    assert_eq!(*kept.last().expect("newest"), 61, "{kept:?}");
    assert_eq!(http.get("/fn/a/f", None).1, json!("live"));

    // a holds 19 × 10,000 bytes and the live one: 120,000 more pass its 300,000.
    let big = json!({ "name": "g", "source": script_of(120_000) });
    let (s, b) = http.post("/api/v1/tenants/a/functions", Some(ADMIN), big.clone());
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"]["kind"], "quota_exceeded", "{b}");
    let message = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("version storage quota") && message.contains("300000"),
        "{message}"
    );
    // b is untouched by a's quota.
    let (s, b) = http.post("/api/v1/tenants/b/functions", Some(ADMIN), big.clone());
    assert_eq!(s, 201, "{b}");
    // a makes room by deleting f, and then saves.
    let (s, b) = http.call(
        "DELETE",
        "/api/v1/tenants/a/functions/f",
        Some(ADMIN),
        common::Body::None,
    );
    assert_eq!(s, 204, "{b}");
    let (s, b) = http.post("/api/v1/tenants/a/functions", Some(ADMIN), big);
    assert_eq!(s, 201, "{b}");
}

/// The data directory's free space is a metric for the operator (not for tenants) and a
/// readiness condition: below `--min-free-disk`, `/readyz` fails and says why.
#[test]
fn free_disk_space_is_a_metric_and_a_readiness_condition() {
    let server = Server::start(&data_dir("exhaust-disk"), None);
    let http = Http::new(&server);
    assert_eq!(http.get("/readyz", None).0, 200);
    let (s, text) = http.get("/metrics", None);
    assert_eq!(s, 200);
    let free: u64 = text
        .as_str()
        .expect("text")
        .lines()
        .find_map(|l| l.strip_prefix("picloud_disk_free_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no picloud_disk_free_bytes in {text}"));
    assert!(free > 0);
    setup(&http);
    let (s, made) = http.post(
        "/api/v1/tenants/t1/tokens",
        Some(ADMIN),
        json!({ "name": "t" }),
    );
    assert_eq!(s, 201, "{made}");
    let tenant_token = made["token"].as_str().expect("a secret").to_string();
    let (s, mine) = http.get("/api/v1/metrics", Some(&tenant_token));
    assert_eq!(s, 200, "{mine}");
    assert!(
        !mine.to_string().contains("picloud_disk_free_bytes"),
        "tenants do not see the disk"
    );
    drop(server);

    let wanting = Server::start_with_args(
        &data_dir("exhaust-disk-full"),
        &["--min-free-disk", &(u64::MAX / 2).to_string()],
    );
    let (s, b) = Http::new(&wanting).get("/readyz", None);
    assert_eq!(s, 503, "{b}");
    assert!(b.to_string().contains("disk is nearly full"), "{b}");
}

/// The values of secret variables in the database, by name.
fn stored_env(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    common::block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.join("picloud.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query_as::<_, (String, String)>("SELECT name, value FROM env_vars")
            .fetch_all(&mut db)
            .await
            .expect("read")
            .into_iter()
            .collect()
    })
}

/// Secrets at rest (before: in the clear in the database): sealed with a key kept in a file
/// of the server's alone, beside the database but not in it; one stored in the clear by an
/// older version is sealed at the next start; a start with another key stops and says why.
#[test]
fn secrets_are_sealed_at_rest_with_a_key_outside_the_database() {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir("exhaust-secrets");
    let mut server = Server::start(&dir, None);
    let http = Http::new(&server);
    let (s, b) = http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "t1" }));
    assert_eq!(s, 201, "{b}");
    let (s, b) = http.post(
        "/api/v1/tenants/t1/functions",
        Some(ADMIN),
        json!({
            "name": "f",
            "public": true,
            "source": "fn handle(req) { `${env(\"API_KEY\")}/${env(\"OLD\")}` }",
            "deploy": true,
        }),
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = http.call(
        "PUT",
        "/api/v1/tenants/t1/functions/f/env/API_KEY",
        Some(ADMIN),
        common::Body::Json(json!({ "value": "hunter2", "secret": true })),
    );
    assert!(s == 200 || s == 204, "{s} {b}");
    assert_eq!(http.get("/fn/t1/f", None).1, json!("hunter2/"));

    let key = dir.join("secret.key");
    assert_eq!(
        std::fs::metadata(&key)
            .expect("the key file")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let stored = stored_env(&dir);
    assert!(
        stored["API_KEY"].starts_with("sealed1:") && !stored["API_KEY"].contains("hunter2"),
        "{stored:?}"
    );

    // A secret an older version stored in the clear.
    server.stop();
    common::block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.join("picloud.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query(
            "INSERT INTO env_vars (function_id, name, value, secret) \
             SELECT id, 'OLD', 'plain-old', 1 FROM functions WHERE name = 'f'",
        )
        .execute(&mut db)
        .await
        .expect("insert");
    });
    let mut server = server.restart_stopped();
    let stored = stored_env(&dir);
    assert!(
        stored["OLD"].starts_with("sealed1:") && !stored["OLD"].contains("plain-old"),
        "sealed at start: {stored:?}"
    );
    assert_eq!(
        Http::new(&server).get("/fn/t1/f", None).1,
        json!("hunter2/plain-old")
    );
    server.stop();

    // Another key: the start stops, saying which key and what to do.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .arg("--cache-dir")
        .arg(common::shared_cache())
        .arg("--secret-key-file")
        .arg(dir.join("another.key"))
        .env("PICLOUD_ADMIN_TOKEN", ADMIN)
        .env_remove("PICLOUD_DATABASE_URL")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("does not open the secrets in the database"),
        "{stderr}"
    );
}
