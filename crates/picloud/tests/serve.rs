//! `picloud serve` as a process: the embedded SQLite default, the admin token made and printed
//! at first start only, health checks, function outcomes as HTTP answers, SIGTERM.

mod common;

use common::{Http, Server, data_dir};
use serde_json::json;

#[test]
fn first_start_prints_an_admin_token_that_works_and_a_restart_keeps_it() {
    let dir = data_dir("first-start");
    let server = Server::start_with(&dir, None, None);
    let printed = server.stdout.join("\n");
    assert!(printed.contains("Created the admin token"), "{printed}");
    let token = printed
        .split_whitespace()
        .find(|w| w.starts_with("pc_") && w.len() == 67)
        .unwrap_or_else(|| panic!("no token in {printed}"))
        .to_string();
    // Only its hash is stored.
    let db = std::fs::read(dir.join("picloud.db")).expect("the SQLite file is in the data dir");
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()));

    let http = Http::new(&server);
    assert_eq!(http.get("/healthz", None), (200, json!("ok")));
    assert_eq!(http.get("/readyz", None), (200, json!("ready")));
    let (s, me) = http.get("/api/v1/whoami", Some(&token));
    assert_eq!((s, me["admin"].as_bool()), (200, Some(true)), "{me}");

    // A restart makes no second token, and the first still works.
    let mut server = server;
    server.stop();
    let server = Server::start_with(&dir, None, None);
    assert!(!server.stdout.join("\n").contains("Created the admin token"));
    assert_eq!(
        Http::new(&server).get("/api/v1/whoami", Some(&token)).0,
        200
    );
}

#[test]
fn a_short_chosen_admin_token_stops_start_up_with_a_clear_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir("short-admin"))
        .env("PICLOUD_ADMIN_TOKEN", "short")
        .env_remove("PICLOUD_DATABASE_URL")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 24 characters"), "{stderr}");
}

#[test]
fn function_outcomes_are_http_answers() {
    let server = Server::start(&data_dir("outcomes"), None);
    let http = Http::new(&server);
    let admin = Some(common::ADMIN);
    assert_eq!(
        http.post("/api/v1/tenants", admin, json!({ "name": "acme" }))
            .0,
        201
    );
    let deploy = |name: &str, source: &str| {
        let (s, b) = http.post(
            "/api/v1/tenants/acme/functions",
            admin,
            json!({ "name": name, "source": source, "deploy": true }),
        );
        assert_eq!(s, 201, "{b}");
    };
    deploy("spin", "fn handle(req) { loop {} }");
    deploy("throws", "fn handle(req) {\n  throw \"nope\";\n}");
    deploy(
        "echo",
        "fn handle(req) { #{ status: 201, headers: #{ \"x-method\": req.method }, body: req.body } }",
    );
    let (s, b) = http.post("/fn/acme/spin", None, json!({}));
    assert_eq!(
        (s, &b["error"]["kind"]),
        (507, &json!("fuel_exhausted")),
        "{b}"
    );
    let (s, b) = http.get("/fn/acme/throws", None);
    assert_eq!(
        (s, &b["error"]["kind"]),
        (500, &json!("script_error")),
        "{b}"
    );
    // Anyone may call a public function: the answer names the kind and the invocation, the
    // record (which only the tenant reads) has the script's words and position.
    let shown = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        shown.starts_with("the script failed") && !shown.contains("nope"),
        "{b}"
    );
    assert!(!shown.contains("line"), "{b}");
    let message = http.record_message("acme", "throws", &b);
    assert!(
        message.contains("nope") && message.contains("line"),
        "{message}"
    );
    let (s, b) = http.post("/fn/acme/echo/a/b", None, json!({ "x": 1 }));
    assert_eq!((s, b), (201, json!({ "x": 1 })));
    // 204 has no body, so no length (before: `content-length: 1`); the script's body is not
    // sent.
    deploy(
        "empty",
        "fn handle(req) { #{ status: 204, body: \"ignored\" } }",
    );
    let (s, headers, body) = common::get_on_host(&server.addr, "localhost", "/fn/acme/empty");
    assert_eq!((s, body.as_str()), (204, ""), "{headers:?}");
    assert!(
        !headers.iter().any(|(k, _)| k == "content-length"),
        "{headers:?}"
    );
    // A status in quotes is told to lose them (before: "not 201").
    deploy("quoted", "fn handle(req) { #{ status: \"201\" } }");
    let (s, b) = http.get("/fn/acme/quoted", None);
    assert_eq!(s, 500, "{b}");
    let message = http.record_message("acme", "quoted", &b);
    assert!(
        message.contains("not the string \"201\": write it without quotes"),
        "{message}"
    );
    // The private function's own caller gets the details the public's does not.
    let (s, b) = http.call(
        "PATCH",
        "/api/v1/tenants/acme/functions/throws",
        admin,
        common::Body::Json(json!({ "public": false })),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = http.get("/fn/acme/throws", admin);
    assert_eq!(s, 500, "{b}");
    let shown = b["error"]["message"].as_str().unwrap_or_default();
    assert!(shown.contains("nope") && shown.contains("line 2"), "{b}");
    for missing in [
        "/fn/acme/nothing",
        "/fn/nobody/echo",
        "/fn/acme",
        "/api/elsewhere",
    ] {
        let (s, b) = http.get(missing, None);
        assert_eq!(
            (s, &b["error"]["kind"]),
            (404, &json!("not_found")),
            "{missing}: {b}"
        );
    }
    // Any other path belongs to the dashboard (its app shell; tests/dashboard.rs has more).
    let (s, b) = http.get("/elsewhere", None);
    assert_eq!(s, 200, "{b}");
    assert!(
        b.as_str()
            .is_some_and(|html| html.contains("/_app/immutable/")),
        "{b}"
    );
}

#[test]
fn sigterm_lets_an_invocation_in_flight_finish_then_exits() {
    let dir = data_dir("drain");
    let mut server = Server::start(&dir, None);
    let http = Http::new(&server);
    let admin = Some(common::ADMIN);
    assert_eq!(
        http.post("/api/v1/tenants", admin, json!({ "name": "acme" }))
            .0,
        201
    );
    // About 0.4 s of work.
    let slow = "fn handle(req) { let n = 0; while n < 1000000 { n += 1; } \"finished\" }";
    let (s, b) = http.post(
        "/api/v1/tenants/acme/functions",
        admin,
        json!({ "name": "slow", "source": slow, "deploy": true, "limits": { "fuel": 9000000000i64 } }),
    );
    assert_eq!(s, 201, "{b}");
    let url = server.url("/fn/acme/slow");
    let in_flight = std::thread::spawn(move || {
        let mut r = ureq::get(&url).call().expect("answered despite SIGTERM");
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().expect("body"),
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !in_flight.is_finished(),
        "the invocation should still be running"
    );
    server.stop(); // SIGTERM, then waits for a clean exit
    assert_eq!(
        in_flight.join().expect("thread"),
        (200, "finished".to_string())
    );
    // It no longer accepts.
    assert!(std::net::TcpStream::connect(&server.addr).is_err());

    // The invocation's record was written before the exit (the writer batches for up to
    // 100 ms): a server started again on the same data finds it at once.
    let again = Server::start(&dir, None);
    let (s, records) =
        Http::new(&again).get("/api/v1/tenants/acme/functions/slow/invocations", admin);
    assert_eq!(s, 200, "{records}");
    assert_eq!(
        records.as_array().map(Vec::len),
        Some(1),
        "the in-flight invocation's record: {records}"
    );
    assert_eq!(records[0]["outcome"], "ok", "{records}");
}

/// Logs to a file or a pipe carry no colour codes (they are escape sequences there).
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir("no-colour"))
        .env("PICLOUD_LOG", "info")
        .env_remove("PICLOUD_DATABASE_URL")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let stdout = child.stdout.take().expect("stdout");
    let listening = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("listening"));
    assert!(listening, "the server never said it was listening");
    // SIGTERM: the server stops its zygote too, which would hold the pipe open after a SIGKILL.
    let stopped = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let out = child.wait_with_output().expect("ends");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("INFO"), "info logs were written: {logs}");
    assert!(!logs.contains('\u{1b}'), "colour codes in {logs:?}");
}

/// The one-time admin token is never spent on a start that fails (the port is taken), a chosen
/// one is not printed, and a lost one is recovered offline with `picloud admin create-token`.
#[test]
fn the_admin_token_is_shown_once_to_a_start_that_works_and_can_be_recovered() {
    let dir = data_dir("admin-once");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("addr").to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["serve", "--listen", &port, "--data-dir"])
        .arg(&dir)
        .env_remove("PICLOUD_ADMIN_TOKEN")
        .env_remove("PICLOUD_DATABASE_URL")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("pc_"),
        "a failed start printed the token"
    );
    drop(taken);
    let server = Server::start_with(&dir, None, None);
    let printed = server.stdout.join("\n");
    assert!(printed.contains("Created the admin token"), "{printed}");
    assert!(printed.contains("picloud admin create-token"), "{printed}");
    let mut server = server;
    server.stop();

    // Lost: made offline on the data directory, then used after a restart.
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["admin", "create-token", "--data-dir"])
        .arg(dir.join("nowhere"))
        .env_remove("PICLOUD_DATABASE_URL")
        .output()
        .expect("runs");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no database at"));
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["admin", "create-token", "--name", "rescue", "--data-dir"])
        .arg(&dir)
        .env_remove("PICLOUD_DATABASE_URL")
        .output()
        .expect("runs");
    let said = String::from_utf8_lossy(&made.stdout).into_owned();
    assert!(
        made.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let token = said
        .split_whitespace()
        .find(|w| w.starts_with("pc_"))
        .unwrap_or_else(|| panic!("no token in {said}"))
        .to_string();
    let server = Server::start_with(&dir, None, None);
    let (s, me) = Http::new(&server).get("/api/v1/whoami", Some(&token));
    assert_eq!((s, me["admin"].as_bool()), (200, Some(true)), "{me}");

    // A chosen token is the operator's already: not printed.
    let chosen = "pc_chosen_by_the_operator_0123456789";
    let server = Server::start_with(&data_dir("admin-chosen"), None, Some(chosen));
    let printed = server.stdout.join("\n");
    assert!(printed.contains("you chose"), "{printed}");
    assert!(!printed.contains(chosen), "{printed}");
}
