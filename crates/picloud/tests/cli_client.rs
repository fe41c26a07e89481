//! The CLI against a real server: `fn`, `env`, `schedule`, `token` and `tenant` commands, human
//! output and `--json`, and clear failures; and `picloud fmt`, which needs no server.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{ADMIN, Http, Server, data_dir};
use serde_json::{Value, json};

fn picloud(server: &Server, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(args)
        .env("PICLOUD_SERVER", server.url(""))
        .env("PICLOUD_TOKEN", token)
        .env_remove("PICLOUD_TENANT")
        .output()
        .expect("picloud runs")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json_of(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("--json prints JSON")
}

#[test]
fn deploy_list_versions_rollback_invoke_env_and_tokens() {
    let server = Server::start(&data_dir("cli-client"), None);
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let hello = format!("{examples}/hello.rhai");
    let json_example = format!("{examples}/json.rhai");

    // Admin: a tenant and a token for it.
    assert!(
        ok(&picloud(&server, ADMIN, &["tenant", "create", "acme"])).contains("created tenant acme")
    );
    let t = json_of(&picloud(
        &server,
        ADMIN,
        &["token", "create", "main", "--tenant", "acme", "--json"],
    ));
    let token = t["token"].as_str().expect("secret").to_string();
    // An admin token must say which tenant.
    let out = picloud(&server, ADMIN, &["fn", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tenant"));

    // Deploy creates, then adds versions; the tenant comes from the token.
    let out = ok(&picloud(
        &server,
        &token,
        &["fn", "deploy", "hello", &hello],
    ));
    assert!(out.contains("deployed hello version 1 at http://"), "{out}");
    let f = json_of(&picloud(
        &server,
        &token,
        &["fn", "deploy", "hello", &json_example, "--json"],
    ));
    assert_eq!(f["active_version"], 2);
    let http = Http::new(&server);
    // v2 (the JSON echo) is live: without a JSON body it answers 400.
    assert_eq!(http.get("/fn/acme/hello", None).0, 400);

    let list = ok(&picloud(&server, &token, &["fn", "list"]));
    assert!(
        list.contains("hello") && list.contains("/fn/acme/hello"),
        "{list}"
    );
    let versions = json_of(&picloud(
        &server,
        &token,
        &["fn", "versions", "hello", "--json"],
    ));
    assert_eq!(versions.as_array().map(Vec::len), Some(2));
    assert!(ok(&picloud(&server, &token, &["fn", "versions", "hello"])).contains("2*"));

    let out = ok(&picloud(&server, &token, &["fn", "rollback", "hello", "1"]));
    assert!(out.contains("hello now runs version 1"), "{out}");
    assert_eq!(
        http.get("/fn/acme/hello?name=cli", None),
        (200, json!("hello cli"))
    );

    // Invoke through the API: exit 0 and the response; a failing one exits 1.
    let out = ok(&picloud(
        &server,
        &token,
        &[
            "fn",
            "invoke",
            "hello",
            "--request",
            r#"{"query":{"name":"pi"}}"#,
        ],
    ));
    assert!(
        out.contains("hello pi") && out.contains("outcome: ok"),
        "{out}"
    );
    let bad = std::env::temp_dir().join(format!("picloud-bad-{}.rhai", std::process::id()));
    std::fs::write(&bad, "fn handle(req) { throw \"no\" }").expect("write");
    let out = picloud(
        &server,
        &token,
        &[
            "fn",
            "invoke",
            "hello",
            "--file",
            bad.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("script_error")
            || String::from_utf8_lossy(&out.stdout).contains("no")
    );
    // A script that does not compile is refused at deploy with its file and position.
    std::fs::write(&bad, "fn handle(req) {\n let = 1;\n}").expect("write");
    let out = picloud(
        &server,
        &token,
        &["fn", "deploy", "hello", bad.to_str().expect("utf-8")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2:6: the script does not compile",
            bad.display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&bad);

    // Env: set, secret, list, unset.
    ok(&picloud(
        &server,
        &token,
        &["env", "set", "hello", "GREETING", "hi"],
    ));
    ok(&picloud(
        &server,
        &token,
        &["env", "set", "hello", "KEY", "s3cret", "--secret"],
    ));
    let env = ok(&picloud(&server, &token, &["env", "list", "hello"]));
    assert!(
        env.contains("GREETING=hi") && env.contains("KEY=(secret)") && !env.contains("s3cret"),
        "{env}"
    );
    ok(&picloud(
        &server,
        &token,
        &["env", "unset", "hello", "GREETING"],
    ));
    assert!(!ok(&picloud(&server, &token, &["env", "list", "hello"])).contains("GREETING"));

    // Schedules: add, list, pause, resume, rm; a function without `on_schedule` is refused.
    let nightly = format!("{examples}/nightly.rhai");
    ok(&picloud(
        &server,
        &token,
        &["fn", "deploy", "nightly", &nightly],
    ));
    let added = json_of(&picloud(
        &server,
        &token,
        &[
            "schedule",
            "add",
            "nightly",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--payload",
            r#"{"report":"daily"}"#,
            "--json",
        ],
    ));
    assert_eq!(added["payload"]["report"], "daily", "{added}");
    let id = added["id"].to_string();
    let listed = ok(&picloud(&server, &token, &["schedule", "list", "nightly"]));
    assert!(
        listed.contains("30 2 * * *")
            && listed.contains("Europe/Berlin")
            && listed.contains("active"),
        "{listed}"
    );
    let paused = ok(&picloud(
        &server,
        &token,
        &["schedule", "pause", "nightly", &id],
    ));
    assert!(paused.contains("paused"), "{paused}");
    let resumed = ok(&picloud(
        &server,
        &token,
        &["schedule", "resume", "nightly", &id],
    ));
    assert!(resumed.contains("active"), "{resumed}");
    let out = picloud(&server, &token, &["schedule", "add", "hello", "@daily"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fn on_schedule(event)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = picloud(
        &server,
        &token,
        &["schedule", "add", "nightly", "99 * * * *"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid cron expression"));
    ok(&picloud(
        &server,
        &token,
        &["schedule", "rm", "nightly", &id],
    ));
    assert!(
        !ok(&picloud(&server, &token, &["schedule", "list", "nightly"])).contains("Europe/Berlin")
    );

    // Tokens: create, list, revoke; the revoked one is refused.
    let ci = json_of(&picloud(
        &server,
        &token,
        &["token", "create", "ci", "--json"],
    ));
    let ci_secret = ci["token"].as_str().expect("secret").to_string();
    let listed = ok(&picloud(&server, &token, &["token", "list"]));
    assert!(
        listed.contains("ci") && !listed.contains(&ci_secret),
        "{listed}"
    );
    let id = ci["id"].to_string();
    ok(&picloud(&server, &token, &["token", "revoke", &id]));
    let out = picloud(&server, &ci_secret, &["fn", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    ok(&picloud(
        &server,
        &token,
        &["fn", "delete", "hello", "--yes"],
    ));
    assert_eq!(http.get("/fn/acme/hello", None).0, 404);
}

#[test]
fn no_token_or_no_server_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["fn", "list"])
        .env_remove("PICLOUD_TOKEN")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PICLOUD_TOKEN"));
    let out = Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args([
            "fn",
            "list",
            "--server",
            "http://127.0.0.1:1",
            "--tenant",
            "x",
        ])
        .env("PICLOUD_TOKEN", "pc_x")
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(3),
        "cannot reach the server: exit 3"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"));
}

/// What a newcomer gets wrong is refused with what to do: a name the API cannot hold, a
/// server without a scheme, values out of range; a refused script is named `FILE:LINE:COL`;
/// `--private` on an existing function makes it private and says so.
#[test]
fn mistakes_are_refused_with_what_to_do() {
    let server = Server::start(&data_dir("cli-mistakes"), None);
    let dir = data_dir("cli-mistakes-files");
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("good.rhai");
    std::fs::write(&good, "fn handle(req) { \"hi\" }\n").expect("write");
    let bad = dir.join("bad.rhai");
    std::fs::write(&bad, "fn handle(req) {\n  let x = ;\n}\n").expect("write");
    let (good, bad) = (good.to_string_lossy(), bad.to_string_lossy());
    ok(&picloud(&server, ADMIN, &["tenant", "create", "acme"]));
    let err = |out: &Output| {
        assert!(
            !out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let out = picloud(
        &server,
        ADMIN,
        &["fn", "deploy", "my func", &good, "--tenant", "acme"],
    );
    assert_eq!(out.status.code(), Some(2), "refused before sending: exit 2");
    let e = err(&out);
    assert!(
        e.contains("\"my func\" is not a valid name") && e.contains("lower-case"),
        "{e}"
    );
    // A script far past the body cap: the server reads (and drops) what it refuses, so the CLI,
    // which writes its whole body before it reads, gets the 413 and its reason, not a broken
    // pipe.
    let huge = dir.join("huge.rhai");
    std::fs::write(
        &huge,
        format!("fn handle(req) {{ \"\" }}\n//{}\n", "x".repeat(20 << 20)),
    )
    .expect("write");
    let out = picloud(
        &server,
        ADMIN,
        &[
            "fn",
            "deploy",
            "big",
            &huge.to_string_lossy(),
            "--tenant",
            "acme",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "the server refused: exit 1");
    let e = err(&out);
    assert!(
        e.contains("huge.rhai") && e.contains("more than this server takes"),
        "{e}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args([
            "fn",
            "list",
            "--server",
            "localhost:8080",
            "--tenant",
            "acme",
        ])
        .env("PICLOUD_TOKEN", ADMIN)
        .output()
        .expect("runs");
    let e = err(&out);
    assert!(
        e.contains("give the scheme too, as in http://localhost:8080"),
        "{e}"
    );
    for (args, says) in [
        (
            &["fn", "logs", "f", "--limit", "5000"][..],
            "5000 is not in 1..=1000",
        ),
        (
            &["fn", "logs", "f", "--outcome", "bogus"][..],
            "possible values",
        ),
    ] {
        let out = picloud(&server, ADMIN, args);
        assert_eq!(out.status.code(), Some(2), "a usage error: {args:?}");
        let e = err(&out);
        assert!(e.contains(says), "{args:?}: {e}");
    }

    let e = err(&picloud(
        &server,
        ADMIN,
        &["fn", "deploy", "f", &bad, "--tenant", "acme"],
    ));
    assert!(e.contains(&format!("{bad}:2:11: ")), "{e}");
    ok(&picloud(
        &server,
        ADMIN,
        &["fn", "deploy", "f", &good, "--tenant", "acme"],
    ));
    let e = err(&picloud(
        &server,
        ADMIN,
        &["fn", "deploy", "f", &bad, "--tenant", "acme"],
    ));
    assert!(e.contains(&format!("{bad}:2:11: ")), "{e}");
    let http = Http::new(&server);
    assert_eq!(http.get("/fn/acme/f", None).0, 200);
    let said = ok(&picloud(
        &server,
        ADMIN,
        &["fn", "deploy", "f", &good, "--private", "--tenant", "acme"],
    ));
    assert!(said.contains("now token-protected"), "{said}");
    // The same source again keeps the live version and saves nothing (a pipeline deploying on
    // every push does not fill the version quota).
    assert!(
        said.contains("unchanged (the same source): f version 1"),
        "{said}"
    );
    let (s, b) = http.post(
        "/api/v1/tenants/acme/functions/f/versions",
        Some(ADMIN),
        json!({ "source": "fn handle(req) { \"hi\" }\n", "deploy": true }),
    );
    assert_eq!(
        (s, b["version"].as_i64(), b["reused"].as_bool()),
        (200, Some(1), Some(true)),
        "{b}"
    );
    let (_, versions) = http.get("/api/v1/tenants/acme/functions/f/versions", Some(ADMIN));
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");
    assert_eq!(http.get("/fn/acme/f", None).0, 404);
    assert_eq!(http.get("/fn/acme/f", Some(ADMIN)).0, 200);
    let said = ok(&picloud(
        &server,
        ADMIN,
        &["fn", "deploy", "f", &good, "--public", "--tenant", "acme"],
    ));
    assert!(said.contains("now public"), "{said}");
    assert_eq!(http.get("/fn/acme/f", None).0, 200);

    // Who am I, and what runs: the token's identity, a version's source.
    let said = ok(&picloud(&server, ADMIN, &["whoami"]));
    assert!(said.starts_with("admin token admin at http://"), "{said}");
    let t = json_of(&picloud(
        &server,
        ADMIN,
        &["token", "create", "dev", "--tenant", "acme", "--json"],
    ));
    let dev = t["token"].as_str().expect("secret");
    let said = ok(&picloud(&server, dev, &["whoami"]));
    assert!(said.starts_with("token dev of tenant acme"), "{said}");
    assert_eq!(
        ok(&picloud(&server, dev, &["fn", "source", "f"])),
        "fn handle(req) { \"hi\" }\n"
    );
    assert_eq!(
        ok(&picloud(
            &server,
            dev,
            &["fn", "source", "f", "--version", "1"]
        )),
        "fn handle(req) { \"hi\" }\n"
    );
    let out = picloud(&server, dev, &["fn", "source", "f", "--version", "99"]);
    assert_eq!(out.status.code(), Some(1), "refused by the server: exit 1");
    assert!(err(&out).contains("404"));
    // Under --json a failure is a JSON document too.
    let out = picloud(
        &server,
        dev,
        &["fn", "source", "f", "--version", "99", "--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&out.stdout).expect("a JSON document");
    assert_eq!(
        (
            &e["error"]["status"],
            &e["error"]["exit_code"],
            &e["error"]["message"]
        ),
        (&json!(404), &json!(1), &json!("no such version")),
        "{e}"
    );
    let out = picloud(&server, dev, &["fn", "delete", "no such", "--json"]);
    let e: Value = serde_json::from_slice(&out.stdout).expect("a JSON document");
    assert_eq!(e["error"]["exit_code"], json!(2), "{e}");

    // What cannot be undone asks first; without a terminal it needs --yes.
    let out = picloud(&server, dev, &["fn", "delete", "f"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(err(&out).contains("pass --yes"));
    assert_eq!(http.get("/fn/acme/f", None).0, 200, "nothing was deleted");
    let me = json_of(&picloud(&server, dev, &["whoami", "--json"]));
    let own = me["id"].to_string();
    let out = picloud(&server, dev, &["token", "revoke", &own]);
    assert_eq!(out.status.code(), Some(2));
    assert!(err(&out).contains("revoking the token you are using"));
    ok(&picloud(&server, dev, &["fn", "delete", "f", "--yes"]));
    assert_eq!(http.get("/fn/acme/f", None).0, 404);
    ok(&picloud(&server, dev, &["token", "revoke", &own, "--yes"]));
    assert_eq!(picloud(&server, dev, &["whoami"]).status.code(), Some(1));
}

/// Every example is formatted as `picloud fmt` would, and does what its comment says.
#[test]
fn every_example_is_formatted_and_does_what_it_says() {
    let examples = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&examples)
        .expect("examples")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    files.sort();
    let named: Vec<String> = files
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        named,
        ["hello", "json", "nightly"],
        "a new example needs its check here"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_picloud"))
        .arg("fmt")
        .arg("--check")
        .args(&files)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "unformatted examples: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let server = Server::start(&data_dir("cli-examples"), None);
    ok(&picloud(&server, ADMIN, &["tenant", "create", "demo"]));
    for (name, file) in named.iter().zip(&files) {
        let file = file.to_string_lossy();
        ok(&picloud(
            &server,
            ADMIN,
            &["fn", "deploy", name, &file, "--tenant", "demo"],
        ));
    }
    let http = Http::new(&server);
    // hello: `hello <name>` from ?name=, default "world".
    assert_eq!(
        http.get("/fn/demo/hello?name=pi", None),
        (200, json!("hello pi"))
    );
    assert_eq!(
        http.get("/fn/demo/hello", None),
        (200, json!("hello world"))
    );
    // json: an object back with its key count; anything else a 400 saying so.
    assert_eq!(
        http.post("/fn/demo/json", None, json!({ "a": 1, "b": [2] })),
        (
            200,
            json!({ "received": { "a": 1, "b": [2] }, "keys": 2, "method": "POST" })
        )
    );
    for not_an_object in [json!([1, 2]), json!("text"), json!(3)] {
        let (s, b) = http.post("/fn/demo/json", None, not_an_object.clone());
        assert_eq!(s, 400, "{not_an_object}: {b}");
        assert!(
            b["error"]
                .as_str()
                .is_some_and(|e| e.contains("send a JSON object")),
            "{b}"
        );
    }
    assert_eq!(http.get("/fn/demo/json", None).0, 400);
    // nightly: the schedule its comment shows is accepted; its endpoint shows the last run.
    ok(&picloud(
        &server,
        ADMIN,
        &[
            "schedule",
            "add",
            "nightly",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--payload",
            r#"{"report":"daily"}"#,
            "--tenant",
            "demo",
        ],
    ));
    assert_eq!(
        http.get("/fn/demo/nightly", None),
        (200, json!({ "last_run": null }))
    );
}

#[test]
fn fmt_rewrites_checks_and_pipes() {
    let dir = data_dir("cli-fmt");
    let messy = dir.join("messy.rhai");
    let tidy = dir.join("tidy.rhai");
    let broken = dir.join("broken.rhai");
    std::fs::write(&messy, "fn handle(req){let a=[1,2];a}").expect("write");
    std::fs::write(&tidy, "fn handle(req) {\n\t1\n}\n").expect("write");
    std::fs::write(&broken, "fn handle(req) {\n let = 1;\n}").expect("write");
    let run = |args: &[&std::ffi::OsStr], stdin: &str| {
        use std::io::Write as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_picloud"))
            .arg("fmt")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("picloud fmt runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("output")
    };

    // --check changes nothing, lists what is not formatted, exits 1.
    let out = run(
        &[messy.as_os_str(), tidy.as_os_str(), "--check".as_ref()],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("messy.rhai") && !listed.contains("tidy.rhai"),
        "{listed}"
    );
    assert_eq!(
        std::fs::read_to_string(&messy).expect("read"),
        "fn handle(req){let a=[1,2];a}"
    );

    // In place, then --check passes.
    let out = run(&[messy.as_os_str()], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&messy).expect("read"),
        "fn handle(req) {\n\tlet a = [1, 2];\n\ta\n}\n"
    );
    assert_eq!(
        run(&[messy.as_os_str(), "--check".as_ref()], "")
            .status
            .code(),
        Some(0)
    );

    // `-`: standard input to standard output.
    let out = run(&["-".as_ref()], "let x=-1");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "let x = -1\n");

    // A parse error: file, line, column, exit 2, the file untouched.
    let out = run(&[broken.as_os_str()], "");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.rhai:2:6:"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&broken).expect("read"),
        "fn handle(req) {\n let = 1;\n}"
    );
}

/// The rest of a complete CLI, each command against a real server: function limits, pins and
/// prunes, a tenant's ceilings and sub-minute permission, a schedule's runs, `fn logs` with
/// what each record answered, the tenant's keys, and deleting a tenant.
#[test]
fn limits_pins_prunes_keys_runs_and_deleting_a_tenant() {
    let server = Server::start(&data_dir("cli-complete"), None);
    let dir = data_dir("cli-complete-files");
    std::fs::create_dir_all(&dir).expect("dir");
    ok(&picloud(&server, ADMIN, &["tenant", "create", "acme"]));
    let t = json_of(&picloud(
        &server,
        ADMIN,
        &["token", "create", "main", "--tenant", "acme", "--json"],
    ));
    let token = t["token"].as_str().expect("secret").to_string();
    let script = |n: usize| {
        let file = dir.join(format!("v{n}.rhai"));
        std::fs::write(
            &file,
            format!(
                "// version {n}\nfn handle(req) {{\n\tkv_set(\"seen/\" + req.path, {n});\n\tkv_set(\"a b?c\", #{{ n: {n} }});\n\t#{{ v: {n} }}\n}}\n\nfn on_schedule(event) {{\n\tkv_set(\"tick\", event.scheduled_at);\n}}\n"
            ),
        )
        .expect("write");
        file.display().to_string()
    };

    // Limits: shown with their origin, chosen in units a person uses, given back with
    // `default`, and refused past the tenant's ceiling.
    ok(&picloud(
        &server,
        &token,
        &["fn", "deploy", "app", &script(1)],
    ));
    let shown = ok(&picloud(&server, &token, &["fn", "limits", "app"]));
    assert!(
        shown.contains("64 MiB") && shown.contains("default"),
        "{shown}"
    );
    let f = json_of(&picloud(
        &server,
        &token,
        &[
            "fn",
            "limits",
            "app",
            "--memory-mb",
            "32",
            "--timeout-ms",
            "2_000",
            "--json",
        ],
    ));
    assert_eq!(f["limits"]["memory_bytes"], 32 << 20, "{f}");
    assert_eq!(f["chosen_limits"]["timeout_ms"], 2000, "{f}");
    let f = json_of(&picloud(
        &server,
        &token,
        &["fn", "limits", "app", "--memory-mb", "default", "--json"],
    ));
    assert_eq!(f["chosen_limits"]["memory_bytes"], Value::Null, "{f}");
    assert_eq!(
        f["chosen_limits"]["timeout_ms"], 2000,
        "the other choice stays: {f}"
    );
    let out = picloud(&server, &token, &["fn", "limits", "app", "--fuel", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a whole number"));
    let t = json_of(&picloud(
        &server,
        ADMIN,
        &["tenant", "ceilings", "acme", "--memory-mb", "128", "--json"],
    ));
    assert_eq!(t["ceilings"]["memory_bytes"], 128 << 20, "{t}");
    let out = picloud(
        &server,
        &token,
        &["fn", "limits", "app", "--memory-mb", "200"],
    );
    assert_eq!(out.status.code(), Some(1));
    let shown = ok(&picloud(&server, &token, &["tenant", "show", "acme"]));
    assert!(
        shown.contains("128 MiB") && shown.contains("chosen") && shown.contains("not allowed"),
        "{shown}"
    );
    let out = picloud(
        &server,
        &token,
        &["tenant", "ceilings", "acme", "--fuel", "5"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a tenant cannot raise its own ceilings"
    );

    // Versions: pinned ones survive a prune, as do the live one and the newest `--keep`.
    for n in 2..=6 {
        ok(&picloud(
            &server,
            &token,
            &["fn", "deploy", "app", &script(n)],
        ));
    }
    ok(&picloud(&server, &token, &["fn", "rollback", "app", "3"]));
    assert!(
        ok(&picloud(&server, &token, &["fn", "pin", "app", "2"])).contains("pinned app version 2")
    );
    let out = ok(&picloud(
        &server,
        &token,
        &["fn", "prune", "app", "--keep", "1"],
    ));
    assert!(
        out.contains("pruned 3 versions of app (1, 4, 5); 3 left"),
        "{out}"
    );
    let versions = json_of(&picloud(
        &server,
        &token,
        &["fn", "versions", "app", "--json"],
    ));
    let kept: Vec<(i64, bool)> = versions
        .as_array()
        .expect("list")
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().expect("n"),
                v["pinned"].as_bool().expect("pinned"),
            )
        })
        .collect();
    assert_eq!(kept, vec![(2, true), (3, false), (6, false)]);
    assert!(
        ok(&picloud(
            &server,
            &token,
            &["fn", "prune", "app", "--keep", "1"]
        ))
        .contains("nothing to prune")
    );
    ok(&picloud(&server, &token, &["fn", "unpin", "app", "2"]));
    let r = json_of(&picloud(
        &server,
        &token,
        &["fn", "prune", "app", "--keep", "0", "--json"],
    ));
    assert_eq!(r["pruned"], json!([2, 6]), "{r}");
    assert_eq!(r["kept"], 1);
    let out = picloud(&server, &token, &["fn", "pin", "app", "6"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such version"));

    // Keys: what the script stored, listed, read and deleted, odd characters and all.
    let http = Http::new(&server);
    assert_eq!(http.get("/fn/acme/app/first", None).0, 200);
    assert_eq!(http.get("/fn/acme/app/second", None).0, 200);
    let keys = ok(&picloud(&server, &token, &["kv", "list"]));
    assert_eq!(keys, "a b?c\nseen//first\nseen//second\n");
    let keys = json_of(&picloud(
        &server,
        &token,
        &["kv", "list", "--prefix", "seen/", "--limit", "1", "--json"],
    ));
    assert_eq!(keys, json!(["seen//first"]));
    let value = json_of(&picloud(&server, &token, &["kv", "get", "a b?c", "--json"]));
    assert_eq!(value, json!({ "key": "a b?c", "value": { "n": 3 } }));
    ok(&picloud(&server, &token, &["kv", "rm", "a b?c"]));
    let out = picloud(&server, &token, &["kv", "get", "a b?c"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404 no such key"));
    // Hostile keys through the API: a NUL, bytes that are not UTF-8, a huge key, control
    // characters — each a clear 4xx in JSON, never a 500.
    let huge = "k".repeat(5000);
    for (query, status) in [
        ("key=%00", 400),
        // Not UTF-8: read with U+FFFD in place of each bad byte, a key no script wrote.
        ("key=%FF%FE", 404),
        (&*format!("key={huge}"), 400),
        ("key=%01%1B%7F", 404),
        ("", 400),
    ] {
        let (s, e) = http.get(
            &format!("/api/v1/tenants/acme/kv/entry?{query}"),
            Some(&token),
        );
        assert_eq!(s, status, "{query:.40}: {e}");
        assert!(e["error"]["message"].is_string(), "{query:.40}: {e}");
    }
    let (s, e) = http.get("/api/v1/tenants/acme/kv?prefix=%00", Some(&token));
    assert_eq!(s, 400, "{e}");
    // The admin reads any tenant's keys, naming it.
    let keys = ok(&picloud(
        &server,
        ADMIN,
        &["kv", "list", "--tenant", "acme"],
    ));
    assert_eq!(keys, "seen//first\nseen//second\n");

    // A schedule firing every second needs the admin's permission first.
    let out = picloud(&server, &token, &["schedule", "add", "app", "* * * * * *"]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("403") && said.contains("more than once a minute"),
        "{said}"
    );
    ok(&picloud(
        &server,
        &token,
        &["schedule", "add", "app", "30 * * * * *"],
    ));
    let t = json_of(&picloud(
        &server,
        ADMIN,
        &[
            "tenant",
            "ceilings",
            "acme",
            "--sub-minute-schedules",
            "yes",
            "--json",
        ],
    ));
    assert_eq!(t["sub_minute_schedules"], true);
    let s = json_of(&picloud(
        &server,
        &token,
        &["schedule", "add", "app", "* * * * * *", "--json"],
    ));
    let id = s["id"].as_i64().expect("id").to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let runs = loop {
        let runs = ok(&picloud(&server, &token, &["schedule", "runs", "app", &id]));
        if runs.contains(" ok ") {
            break runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run finished: {runs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(runs.starts_with("DUE (UTC)"), "{runs}");
    // Each record says what it answered: the request, or the schedule.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let logs = loop {
        let logs = ok(&picloud(
            &server,
            &token,
            &["fn", "logs", "app", "--limit", "1000"],
        ));
        if logs.contains(&format!("schedule {id} (* * * * * *)")) && logs.contains("GET /second") {
            break logs;
        }
        assert!(std::time::Instant::now() < deadline, "{logs}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(logs.starts_with("AT (UTC)"), "{logs}");
    ok(&picloud(&server, &token, &["schedule", "rm", "app", &id]));
    let records = json_of(&picloud(
        &server,
        &token,
        &["fn", "logs", "app", "--limit", "1000", "--json"],
    ));
    let first = records
        .as_array()
        .expect("one JSON array")
        .iter()
        .find(|r| r["path"] == "/first")
        .expect("the first request's record");
    assert_eq!(first["method"], "GET");

    // Followed, `--json` streams NDJSON: a record per line, as each invocation ends.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["fn", "logs", "app", "--follow", "--json", "--limit", "1"])
        .env("PICLOUD_SERVER", server.url(""))
        .env("PICLOUD_TOKEN", &token)
        .env_remove("PICLOUD_TENANT")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("picloud runs");
    let stdout = follow.stdout.take().expect("stdout");
    let (lines, arrive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let first = arrive
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the latest record");
    serde_json::from_str::<Value>(&first).expect("a JSON object on one line");
    // The tail is open once the latest record is printed; a request then arrives as a line.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let streamed = loop {
        assert_eq!(http.get("/fn/acme/app/third", None).0, 200);
        if let Ok(line) = arrive.recv_timeout(std::time::Duration::from_millis(500)) {
            let r: Value = serde_json::from_str(&line).expect("a JSON object on one line");
            if r["path"] == "/third" {
                break r;
            }
        }
        assert!(std::time::Instant::now() < deadline, "nothing streamed");
    };
    assert_eq!(streamed["method"], "GET");
    let _ = follow.kill();
    let _ = follow.wait();

    // Deleting a tenant asks, then takes everything with it.
    let out = picloud(&server, ADMIN, &["tenant", "delete", "acme"]);
    assert_eq!(out.status.code(), Some(2), "no terminal: --yes is needed");
    assert_eq!(
        http.get("/fn/acme/app/x", None).0,
        200,
        "nothing was deleted"
    );
    let out = picloud(&server, &token, &["tenant", "delete", "acme", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "only an admin deletes a tenant");
    assert!(
        ok(&picloud(
            &server,
            ADMIN,
            &["tenant", "delete", "acme", "--yes"]
        ))
        .contains("deleted tenant acme")
    );
    assert_eq!(http.get("/fn/acme/app/x", None).0, 404);
    let out = picloud(&server, &token, &["fn", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "its tokens are gone"
    );
    assert!(!ok(&picloud(&server, ADMIN, &["tenant", "list"])).contains("acme"));
    // The name is free again, with nothing of the old tenant's.
    ok(&picloud(&server, ADMIN, &["tenant", "create", "acme"]));
    assert_eq!(
        ok(&picloud(
            &server,
            ADMIN,
            &["kv", "list", "--tenant", "acme"]
        )),
        ""
    );
}

/// `picloud invoke` on a laptop: variables from `--env`, keys in memory or kept in a file.
#[test]
fn local_invoke_takes_variables_and_keeps_keys_in_a_file() {
    let dir = data_dir("cli-local-invoke");
    std::fs::create_dir_all(&dir).expect("dir");
    let script = dir.join("count.rhai");
    std::fs::write(
        &script,
        "fn handle(req) {\n\tlet n = (kv_get(\"count\") ?? 0) + 1;\n\tkv_set(\"count\", n);\n\t#{ greeting: env(\"GREETING\"), count: n, keys: kv_list(\"\") }\n}\n",
    )
    .expect("write");
    let kv = dir.join("kv.json");
    let _ = std::fs::remove_file(&kv);
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_picloud"))
            .args(["invoke", script.to_str().expect("utf-8"), "--json"])
            .args(extra)
            .env("PICLOUD_CACHE_DIR", common::shared_cache())
            .output()
            .expect("picloud runs");
        json_of(&out)
    };
    let body = |r: &Value| -> Value {
        serde_json::from_str(r["response"]["body"].as_str().expect("a body")).expect("JSON")
    };
    // In memory: every run starts empty.
    let r = run(&["--env", "GREETING=hi there"]);
    assert_eq!(
        body(&r),
        json!({ "greeting": "hi there", "count": 1, "keys": ["count"] })
    );
    assert_eq!(body(&run(&[]))["count"], 1);
    // Kept: the file holds the store between runs, as plain JSON.
    let file = kv.to_str().expect("utf-8");
    run(&["--kv-file", file]);
    let r = run(&["--kv-file", file, "--env", "GREETING=again"]);
    assert_eq!(
        body(&r),
        json!({ "greeting": "again", "count": 2, "keys": ["count"] })
    );
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(&kv).expect("kept")).expect("JSON");
    assert_eq!(kept, json!({ "count": 2 }));
    // Mistakes are refused before running.
    let out = Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["invoke", script.to_str().expect("utf-8"), "--env", "2BAD=x"])
        .output()
        .expect("picloud runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a variable name"));
    std::fs::write(&kv, "[1, 2]").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["invoke", script.to_str().expect("utf-8"), "--kv-file", file])
        .output()
        .expect("picloud runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a JSON object"));
    // `--help` says what it lacks.
    let help = Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["invoke", "--help"])
        .output()
        .expect("picloud runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("It lacks what a server adds"), "{help}");
}
