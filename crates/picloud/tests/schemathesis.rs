//! Fuzzes the management API with schemathesis (PyPI; `scripts/setup` installs the pinned
//! version) against the OpenAPI document the server itself serves: no input may get a 5xx, and
//! every answer must be one the document declares, with the body it declares. The handlers and
//! the document come from the same code (`utoipa`), so this is what keeps the document honest
//! about the error answers the extractors give (401, 400, 413, 415, 422) as well as the handlers'.
//!
//! A real `picloud serve` on SQLite, on loopback, private to this test: schemathesis may delete
//! and overwrite what it finds, except the admin token it fuzzes with.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN, Http, Server, data_dir};
use serde_json::json;

/// The checks run on every answer. `status_code_conformance`: the status is one the operation
/// documents; `content_type_conformance` and `response_schema_conformance`: the body is what
/// the document says for that status.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance";

/// Test cases per operation and phase: bounded so that the whole run takes a minute or two in
/// a debug build on two cores.
const MAX_EXAMPLES: &str = "50";

/// Fixed, so that a failure found once is found again by the next run.
const SEED: &str = "20240601";

/// Longest the schemathesis process may run before the test kills it and fails.
const HARD_TIMEOUT: Duration = Duration::from_secs(420);

/// The function the fuzzed paths name: `handle` for test-invokes, `on_schedule` so that
/// schedules can be created.
const SCRIPT: &str = r#"
fn handle(req) { `fuzzed ${req.path}` }

fn on_schedule(event) { event.scheduled_at }
"#;

/// A command that is on `PATH`.
fn schemathesis_command() -> String {
    for name in ["schemathesis", "st"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return name.to_string();
        }
    }
    panic!(
        "schemathesis is required and is not on PATH: run scripts/setup \
         (python3 -m pip install schemathesis==4.32.5)"
    );
}

/// The objects the fuzzed paths point at; each id is what the server answered.
struct Fixture {
    tenant_token_id: i64,
    schedule_id: i64,
    doomed_schedule_id: i64,
}

fn post(http: &Http, path: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, answer) = http.post(path, Some(ADMIN), body);
    assert!(
        status == 200 || status == 201,
        "POST {path}: {status} {answer}"
    );
    answer
}

fn id(answer: &serde_json::Value) -> i64 {
    answer["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id in {answer}"))
}

/// Tenant `fuzz` with a tenant token, function `hello` deployed with a variable `KEY` and two
/// schedules, and function `doomed` for the delete to delete (so that `hello` survives it).
fn fixture(http: &Http) -> Fixture {
    post(http, "/api/v1/tenants", json!({ "name": "fuzz" }));
    let token = post(
        http,
        "/api/v1/tenants/fuzz/tokens",
        json!({ "name": "main" }),
    );
    let functions = "/api/v1/tenants/fuzz/functions";
    for name in ["hello", "doomed"] {
        post(
            http,
            functions,
            json!({ "name": name, "source": SCRIPT, "deploy": true }),
        );
    }
    let (status, answer) = http.call(
        "PUT",
        &format!("{functions}/hello/env/KEY"),
        Some(ADMIN),
        common::Body::Json(json!({ "value": "v" })),
    );
    assert_eq!(status, 200, "{answer}");
    // Yearly, so that no tick runs while the test does.
    let schedule = json!({ "cron": "0 0 1 1 *", "payload": { "from": "fixture" } });
    let schedules = format!("{functions}/hello/schedules");
    let schedule_id = id(&post(http, &schedules, schedule.clone()));
    let doomed_schedule_id = id(&post(http, &schedules, schedule));
    Fixture {
        tenant_token_id: id(&token),
        schedule_id,
        doomed_schedule_id,
    }
}

/// `schemathesis.toml`: the fixed path parameters, per operation where a name means different
/// objects.
fn config(f: &Fixture) -> String {
    format!(
        r#"# Every path parameter names a real object, so that operations reach their handlers'
# logic rather than stopping at 404.
[parameters]
"path.tenant" = "fuzz"
"path.function" = "hello"
"path.version" = 1
"path.name" = "KEY"

# Deleting `hello` would turn every later operation on it into a 404: delete `doomed`.
[[operations]]
include-name = "DELETE /api/v1/tenants/{{tenant}}/functions/{{function}}"
parameters = {{ "path.tenant" = "fuzz", "path.function" = "doomed" }}

[[operations]]
include-name = "DELETE /api/v1/tenants/{{tenant}}/tokens/{{id}}"
parameters = {{ "path.tenant" = "fuzz", "path.id" = {token} }}

[[operations]]
include-path-regex = "/schedules/\\{{id\\}}"
exclude-method = "DELETE"
parameters = {{ "path.tenant" = "fuzz", "path.function" = "hello", "path.id" = {schedule} }}

[[operations]]
include-name = "DELETE /api/v1/tenants/{{tenant}}/functions/{{function}}/schedules/{{id}}"
parameters = {{ "path.tenant" = "fuzz", "path.function" = "hello", "path.id" = {doomed} }}

# The live tail never ends by itself: read it for a second.
[[operations]]
include-name = "GET /api/v1/tenants/{{tenant}}/functions/{{function}}/invocations/tail"
request-timeout = 1
"#,
        token = f.tenant_token_id,
        schedule = f.schedule_id,
        doomed = f.doomed_schedule_id,
    )
}

/// Runs `cmd` to completion or until `timeout`, its output into `log`; its status and output.
fn run_bounded(mut cmd: Command, log: &Path, timeout: Duration) -> (Option<i32>, String) {
    let out = std::fs::File::create(log).expect("schemathesis.log");
    let err = out.try_clone().expect("log handle");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("schemathesis starts");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(log).unwrap_or_default();
    match status {
        Some(status) => (status.code(), output),
        None => panic!(
            "schemathesis ran past {}s and was killed; its output so far:\n{output}",
            timeout.as_secs()
        ),
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_openapi_document() {
    let st = schemathesis_command();
    let dir = data_dir("schemathesis");
    let server = Server::start(&dir.join("data"), None);
    let http = Http::new(&server);
    let f = fixture(&http);

    let config_file = dir.join("schemathesis.toml");
    std::fs::write(&config_file, config(&f)).expect("schemathesis.toml");

    let mut cmd = Command::new(&st);
    cmd.current_dir(&dir)
        .arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(server.url("/api/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        // One worker: the same seed gives the same requests in the same order.
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .args(["--generation-database", "none"])
        // Revoking the admin token would leave schemathesis unauthenticated for the rest of
        // the run (every answer a 401), and it is the only way this test reaches the API.
        .args(["--exclude-name", "DELETE /api/v1/admin/tokens/{id}"])
        .arg("--no-color")
        .env("NO_COLOR", "1")
        // Loopback only: no proxy in between.
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env("NO_PROXY", "127.0.0.1");
    let started = Instant::now();
    let (code, output) = run_bounded(cmd, &dir.join("schemathesis.log"), HARD_TIMEOUT);
    eprintln!("schemathesis took {:.0}s", started.elapsed().as_secs_f64());
    assert_eq!(
        code,
        Some(0),
        "schemathesis found failures (exit {code:?}):\n{output}"
    );
    // The server is still up and the admin token still works.
    let (status, me) = http.get("/api/v1/whoami", Some(ADMIN));
    assert_eq!(status, 200, "{me}");
}
