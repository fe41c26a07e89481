//! The executor's contract, end to end, in both isolation modes: the zygote is this package's
//! real `picloud` binary, the guest the real snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use picloud_executor_core::{Executor, ExecutorConfig, Isolation};
use picloud_shared::{InvocationRequest, InvocationResult, Limits, LogLevel, Outcome};

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("module-cache")
}

/// The defaults, with this package's `picloud` binary as the zygote.
fn config(isolation: Isolation) -> ExecutorConfig {
    let mut config = ExecutorConfig::new(isolation, cache_dir());
    config.process.program = Some(env!("CARGO_BIN_EXE_picloud").into());
    config
}

async fn executor(isolation: Isolation) -> Executor {
    let mut config = config(isolation);
    config.process.diagnostics = true;
    Executor::start(config).await.expect("the executor starts")
}

async fn run(ex: &Executor, script: &str) -> InvocationResult {
    ex.invoke(script, &InvocationRequest::get("/"), &Limits::default())
        .await
}

fn body(result: &InvocationResult) -> &str {
    assert_eq!(result.outcome, Outcome::Ok, "expected ok, got {result:#?}");
    &result
        .response
        .as_ref()
        .expect("an ok result has a response")
        .body
}

fn json(result: &InvocationResult) -> serde_json::Value {
    serde_json::from_str(body(result)).expect("the body is JSON")
}

/// Runs `$name(isolation)` as one test per isolation mode.
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn process() {
                super::$name(picloud_executor_core::Isolation::Process).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn instance() {
                super::$name(picloud_executor_core::Isolation::Instance).await
            }
        }
    )*};
}

both_modes!(
    hello_world,
    return_forms,
    request_fields_reach_the_script,
    logs_are_captured_and_capped,
    hostile_scripts_end_in_their_outcome,
    nothing_survives_between_invocations,
    hundred_concurrent_invocations_complete,
    unmetered_engine_still_runs_and_stops_on_deadline,
    clocks_have_millisecond_resolution,
    sleep_is_a_script_error_naming_it,
    framing_headers_are_dropped_and_bad_statuses_refused,
    deep_scripts_are_refused_with_a_position,
    a_dropped_invocation_stops_at_once,
);

/// Limits under which a spinning script runs for 30 s: no fuel or operation limit to end it.
fn unbounded_spin_limits() -> Limits {
    Limits {
        fuel: u64::MAX / 2,
        timeout_ms: 30_000,
        script: picloud_shared::ScriptLimits {
            max_operations: 0,
            ..picloud_shared::ScriptLimits::default()
        },
        ..Limits::default()
    }
}

/// An invocation whose caller stops waiting (its future dropped: the client went away) is
/// stopped at once, not run to its deadline: in process mode its worker is killed, in instance
/// mode the job is interrupted and its runner thread serves the next.
async fn a_dropped_invocation_stops_at_once(mode: Isolation) {
    let mut config = config(mode);
    config.instance.threads = 1;
    let ex = Executor::start(config).await.expect("the executor starts");
    let spin = r#"fn handle(req) { let x = 0; loop { x += 1; } }"#;
    let limits = unbounded_spin_limits();
    let request = InvocationRequest::get("/");
    // Boxed, so that dropping it drops the future itself.
    let mut invocation = Box::pin(ex.invoke(spin, &request, &limits));
    // Running for a while, then dropped.
    let mut busy = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        tokio::select! {
            r = &mut invocation => panic!("the spin answered: {r:?}"),
            () = async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                busy = ex.busy_worker_pids();
                std::future::pending::<()>().await
            } => {}
        }
    })
    .await;
    drop(invocation);
    let dropped = std::time::Instant::now();
    if mode == Isolation::Process {
        assert_eq!(busy.len(), 1, "one worker ran the spin");
        let pid = busy[0];
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                dropped.elapsed() < Duration::from_secs(5),
                "worker {pid} still runs after its invocation was dropped"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ex.stats().busy, 0);
    }
    // The next invocation is served at once (in instance mode by the only runner thread, which
    // the spin would have held for 30 s).
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        run(&ex, r#"fn handle(req) { "next" }"#),
    )
    .await
    .expect("the next invocation is served");
    assert_eq!(body(&r), "next");
    assert!(dropped.elapsed() < Duration::from_secs(10));
}

/// Rhai's `timestamp()` and `.elapsed` read the host's clock, which answers in whole
/// milliseconds: a script spinning on it cannot time another tenant's invocation on its core.
async fn clocks_have_millisecond_resolution(mode: Isolation) {
    let ex = executor(mode).await;
    let r = run(
        &ex,
        r#"fn handle(req) {
            let t = timestamp();
            let seen = [];
            let last = -1.0;
            while seen.len() < 4 {
                let e = t.elapsed;
                if e != last { seen.push(e); last = e; }
            }
            #{ elapsed: seen, now: now() }
        }"#,
    )
    .await;
    let value = json(&r);
    let seen = value["elapsed"].as_array().expect("an array");
    assert_eq!(seen.len(), 4, "{value}");
    for e in seen {
        let ms = e.as_f64().expect("seconds") * 1000.0;
        assert!(
            (ms - ms.round()).abs() < 1e-6,
            "a reading finer than a millisecond: {ms} ms in {value}"
        );
    }
}

/// `sleep` cannot be served (an invocation does not wait): a script error that names it, never
/// `internal`.
async fn sleep_is_a_script_error_naming_it(mode: Isolation) {
    let ex = executor(mode).await;
    for call in ["sleep(1)", "sleep(0.01)"] {
        let r = run(&ex, &format!("fn handle(req) {{ {call}; \"woke\" }}")).await;
        match &r.outcome {
            Outcome::ScriptError { message, line, .. } => {
                assert!(message.contains("`sleep`"), "{message}");
                assert_eq!(*line, Some(1), "{r:?}");
            }
            other => panic!("{call}: {other:?}"),
        }
    }
}

/// The executor holds the response to HTTP's rules, whatever the guest answered.
async fn framing_headers_are_dropped_and_bad_statuses_refused(mode: Isolation) {
    let ex = executor(mode).await;
    let r = run(
        &ex,
        r#"fn handle(req) { #{ status: 200, headers: #{ "content-length": "1000",
            "transfer-encoding": "chunked", "connection": "close", "service-worker-allowed": "/",
            "x-kept": "yes" }, body: "hello" } }"#,
    )
    .await;
    let response = r.response.as_ref().expect("a response");
    let mut names: Vec<&str> = response.headers.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["content-type", "x-kept"], "{r:?}");
    assert_eq!(
        r.logs
            .iter()
            .filter(|l| l.level == LogLevel::Warn && l.message.contains("dropped"))
            .count(),
        4,
        "{:?}",
        r.logs
    );
    for status in [101, 150, 600] {
        let r = run(
            &ex,
            &format!("fn handle(req) {{ #{{ status: {status}, body: \"x\" }} }}"),
        )
        .await;
        match &r.outcome {
            Outcome::ScriptError { message, .. } => {
                assert!(message.contains("status"), "{message}")
            }
            other => panic!("status {status}: {other:?}"),
        }
    }
}

/// The guest refuses a script that nests too deeply before its parser recurses, saying where
/// (`stack_overflow`, as when Rhai's own expression depth refuses).
async fn deep_scripts_are_refused_with_a_position(mode: Isolation) {
    let ex = executor(mode).await;
    for script in [
        format!("fn handle(req) {{ req{} }}", ".a".repeat(20_000)),
        format!("fn handle(req) {{ {} }}", vec!["1"; 20_000].join(" + ")),
        format!(
            "fn handle(req) {{ {}1{} }}",
            "(".repeat(2_000),
            ")".repeat(2_000)
        ),
    ] {
        let r = run(&ex, &script).await;
        match &r.outcome {
            Outcome::StackOverflow { message } => {
                assert!(message.contains("nests more than"), "{message}");
                assert!(message.contains("at line 1, column "), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}

async fn hello_world(mode: Isolation) {
    let ex = executor(mode).await;
    let r = run(&ex, r#"fn handle(req) { "hello world" }"#).await;
    assert_eq!(body(&r), "hello world");
    let response = r.response.as_ref().expect("response");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers["content-type"],
        "text/plain; charset=utf-8"
    );
    assert!(r.fuel_used > 0, "fuel is measured: {r:?}");
    assert!(r.peak_memory_bytes > 0, "memory is measured: {r:?}");
    assert!(r.duration_us > 0);
}

async fn return_forms(mode: Isolation) {
    let ex = executor(mode).await;

    // A map with `status` is a full response; header names are lower-cased, values stringified.
    let r = run(
        &ex,
        r#"fn handle(req) { #{ status: 201, headers: #{ "X-Count": 3 }, body: "made" } }"#,
    )
    .await;
    let resp = r.response.clone().expect("response");
    assert_eq!((resp.status, body(&r)), (201, "made"));
    assert_eq!(resp.headers["x-count"], "3");
    assert_eq!(resp.headers["content-type"], "text/plain; charset=utf-8");

    // A non-string body of a full response is JSON.
    let r = run(
        &ex,
        r#"fn handle(req) { #{ status: 404, body: #{ error: "no" } } }"#,
    )
    .await;
    assert_eq!(r.response.as_ref().map(|r| r.status), Some(404));
    assert_eq!(json(&r), serde_json::json!({ "error": "no" }));
    assert_eq!(
        r.response.as_ref().expect("response").headers["content-type"],
        "application/json"
    );

    // A map without `status`, and any other value, is 200 application/json.
    let r = run(&ex, r#"fn handle(req) { #{ a: 1, b: [true, "x"] } }"#).await;
    assert_eq!(json(&r), serde_json::json!({ "a": 1, "b": [true, "x"] }));
    assert_eq!(
        r.response.as_ref().expect("response").headers["content-type"],
        "application/json"
    );
    assert_eq!(
        json(&run(&ex, "fn handle(req) { 42 }").await),
        serde_json::json!(42)
    );
    assert_eq!(
        json(&run(&ex, "fn handle(req) { [1, 2.5] }").await),
        serde_json::json!([1, 2.5])
    );
    assert_eq!(
        json(&run(&ex, "fn handle(req) { () }").await),
        serde_json::Value::Null
    );

    // Bad responses are script errors, with a message that says what is wrong.
    for (script, needle) in [
        (r#"fn handle(req) { #{ status: 99 } }"#, "status"),
        (r#"fn handle(req) { #{ status: "ok" } }"#, "status"),
        (
            r#"fn handle(req) { #{ status: 200, headers: #{ "bad name": "x" } } }"#,
            "header name",
        ),
        (
            r#"fn handle(req) { #{ status: 200, headers: #{ "x": "a\r\nb" } } }"#,
            "line break",
        ),
        (
            r#"fn handle(req) { #{ status: 200, headers: 5 } }"#,
            "headers",
        ),
    ] {
        let r = run(&ex, script).await;
        match &r.outcome {
            Outcome::ScriptError { message, .. } => {
                assert!(message.contains(needle), "{script}: {message}")
            }
            other => panic!("{script}: expected script_error, got {other:?}"),
        }
    }

    // Compile errors and thrown values carry line and column.
    let r = run(&ex, "fn handle(req) {\n  let x = ;\n}").await;
    assert!(
        matches!(
            r.outcome,
            Outcome::ScriptError {
                line: Some(2),
                column: Some(_),
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    let r = run(&ex, "fn handle(req) {\n\n    throw \"nope\";\n}").await;
    match &r.outcome {
        Outcome::ScriptError { message, line, .. } => {
            assert!(message.contains("nope"), "{message}");
            assert_eq!(*line, Some(3));
        }
        other => panic!("expected script_error, got {other:?}"),
    }
    let r = run(&ex, "let x = 1;").await;
    assert!(
        matches!(&r.outcome, Outcome::ScriptError { message, .. } if message.contains("fn handle(req)")),
        "{:?}",
        r.outcome
    );
}

async fn request_fields_reach_the_script(mode: Isolation) {
    let ex = executor(mode).await;
    let request = InvocationRequest {
        method: "POST".into(),
        path: "/orders/7".into(),
        query: BTreeMap::from([("q".into(), "pi".into()), ("n".into(), "2".into())]),
        headers: BTreeMap::from([("x-token".into(), "abc".into())]),
        body: r#"{"items":[1,2],"note":"hi"}"#.into(),
    };
    let script = r#"fn handle(req) {
        #{ method: req.method, path: req.path, q: req.query.q, n: req.query.n,
           token: req.headers["x-token"], body: req.body, items: req.json.items, note: req.json.note,
           missing: req.query.nothing ?? "default" }
    }"#;
    let r = ex.invoke(script, &request, &Limits::default()).await;
    assert_eq!(
        json(&r),
        serde_json::json!({
            "method": "POST", "path": "/orders/7", "q": "pi", "n": "2", "token": "abc",
            "body": r#"{"items":[1,2],"note":"hi"}"#, "items": [1, 2], "note": "hi",
            "missing": "default"
        })
    );
    // A body that is not JSON leaves `json` as ().
    let plain = InvocationRequest {
        body: "not json".into(),
        ..InvocationRequest::get("/")
    };
    let r = ex
        .invoke(
            "fn handle(req) { type_of(req.json) }",
            &plain,
            &Limits::default(),
        )
        .await;
    assert_eq!(body(&r), "()");
}

async fn logs_are_captured_and_capped(mode: Isolation) {
    let ex = executor(mode).await;
    let r = run(
        &ex,
        r#"print("top level");
        fn handle(req) { print("p"); debug("d"); log("warn", "w"); log("error", 42); "ok" }"#,
    )
    .await;
    assert_eq!(body(&r), "ok");
    let lines: Vec<(LogLevel, &str)> = r
        .logs
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (LogLevel::Info, "top level"),
            (LogLevel::Info, "p"),
            (LogLevel::Debug, "\"d\""),
            (LogLevel::Warn, "w"),
            (LogLevel::Error, "42"),
        ]
    );
    assert!(!r.logs_truncated);

    // An unknown level is the script's error, named as such.
    let r = run(&ex, r#"fn handle(req) { log("loud", "x") }"#).await;
    assert!(
        matches!(&r.outcome, Outcome::ScriptError { message, .. } if message.contains("unknown log level")),
        "{:?}",
        r.outcome
    );

    // Past the cap lines are dropped and flagged; the invocation itself still succeeds.
    let limits = Limits {
        max_log_bytes: 1000,
        ..Limits::default()
    };
    let r = ex
        .invoke(
            r#"fn handle(req) { for i in 0..1000 { print(`line ${i} of the flood`) } "done" }"#,
            &InvocationRequest::get("/"),
            &limits,
        )
        .await;
    assert_eq!(body(&r), "done");
    assert!(r.logs_truncated);
    let total: usize = r.logs.iter().map(|l| l.message.len()).sum();
    assert!(total <= 1000 && total > 900, "kept {total} bytes");
    // Logs written before a trap are kept.
    let r = run(&ex, r#"fn handle(req) { print("before"); loop {} }"#).await;
    assert!(
        matches!(r.outcome, Outcome::FuelExhausted { .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.logs.first().map(|l| l.message.as_str()), Some("before"));
}

fn assert_kind(r: &InvocationResult, kind: &str, what: &str) {
    assert_eq!(r.outcome.kind(), kind, "{what}: {:#?}", r.outcome);
    assert!(r.response.is_none(), "{what}: no response on failure");
}

async fn hostile_scripts_end_in_their_outcome(mode: Isolation) {
    let ex = executor(mode).await;
    let ok = r#"fn handle(req) { "still fine" }"#;
    let get = InvocationRequest::get("/");
    let unlimited_ops = {
        let mut l = Limits::default();
        l.script.max_operations = 0;
        l
    };
    let unlimited_sizes = {
        let mut l = Limits::default();
        l.script.max_string_bytes = 0;
        l.script.max_array_len = 0;
        l.script.max_operations = 0;
        l.memory_bytes = 32 << 20;
        l
    };
    let deep = format!(
        "fn handle(req) {{ {}1{} }}",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    let huge = format!("fn handle(req) {{ \"x\" }} // {}", "x".repeat(10 << 20));
    let cases: Vec<(&str, String, Limits, &str)> = vec![
        (
            "loop {}",
            "fn handle(req) { loop {} }".into(),
            Limits::default(),
            "fuel_exhausted",
        ),
        (
            "while true {} past Rhai's operation limit: fuel stops it",
            "fn handle(req) { while true {} }".into(),
            Limits {
                fuel: 50_000_000,
                ..unlimited_ops.clone()
            },
            "fuel_exhausted",
        ),
        (
            "string doubling (Rhai's size limit)",
            r#"fn handle(req) { let s = "xxxxxxxx"; loop { s += s; } }"#.into(),
            Limits::default(),
            "memory_limit",
        ),
        (
            "string doubling past the wasm memory limit",
            r#"fn handle(req) { let s = "xxxxxxxx"; loop { s += s; } }"#.into(),
            unlimited_sizes.clone(),
            "memory_limit",
        ),
        (
            "array doubling past the wasm memory limit",
            "fn handle(req) { let a = [1, 2, 3, 4]; loop { a += a; } }".into(),
            unlimited_sizes.clone(),
            "memory_limit",
        ),
        (
            "array doubling (Rhai's size limit)",
            "fn handle(req) { let a = [1, 2, 3, 4]; loop { a += a; } }".into(),
            Limits::default(),
            "memory_limit",
        ),
        (
            "unbounded recursion",
            "fn f(n) { f(n + 1) } fn handle(req) { f(0) }".into(),
            Limits::default(),
            "stack_overflow",
        ),
        (
            "100,000 nested parentheses",
            deep,
            Limits::default(),
            "stack_overflow",
        ),
        ("a 10 MB script", huge, Limits::default(), "script_error"),
        (
            "busy loop past the wall-clock deadline",
            "fn handle(req) { loop {} }".into(),
            Limits {
                fuel: u64::MAX / 2,
                timeout_ms: 200,
                ..unlimited_ops.clone()
            },
            "timeout",
        ),
    ];
    for (what, script, limits, kind) in cases {
        let r = ex.invoke(&script, &get, &limits).await;
        assert_kind(&r, kind, what);
        let next = run(&ex, ok).await;
        assert_eq!(body(&next), "still fine", "the invocation after {what}");
    }
}

async fn nothing_survives_between_invocations(mode: Isolation) {
    let ex = executor(mode).await;
    let script = r#"
        let counter = 0;
        counter += 1;
        print(`${counter}`);
        fn handle(req) { "ok" }
    "#;
    for _ in 0..5 {
        let r = run(&ex, script).await;
        assert_eq!(body(&r), "ok");
        assert_eq!(r.logs.len(), 1);
        assert_eq!(r.logs[0].message, "1", "a fresh global every time");
    }
}

async fn hundred_concurrent_invocations_complete(mode: Isolation) {
    let ex = std::sync::Arc::new(executor(mode).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let ex = ex.clone();
        tasks.spawn(async move {
            let script = format!(
                r#"fn handle(req) {{ let s = 0; for i in 0..1000 {{ s += i }} `{i}:${{s}}` }}"#
            );
            let r = run(&ex, &script).await;
            (i, body(&r).to_string())
        });
    }
    let mut seen = 0;
    while let Some(done) = tasks.join_next().await {
        let (i, body) = done.expect("task");
        assert_eq!(body, format!("{i}:499500"));
        seen += 1;
    }
    assert_eq!(seen, 100);
}

async fn unmetered_engine_still_runs_and_stops_on_deadline(mode: Isolation) {
    let mut config = config(mode);
    config.consume_fuel = false;
    let ex = Executor::start(config)
        .await
        .expect("starts without fuel metering");
    let r = run(&ex, r#"fn handle(req) { "unmetered" }"#).await;
    assert_eq!(body(&r), "unmetered");
    assert_eq!(r.fuel_used, 0);
    let mut limits = Limits {
        timeout_ms: 200,
        ..Limits::default()
    };
    limits.script.max_operations = 0;
    let r = ex
        .invoke(
            "fn handle(req) { loop {} }",
            &InvocationRequest::get("/"),
            &limits,
        )
        .await;
    assert_kind(&r, "timeout", "a runaway script without fuel");
}

// ---- process mode only: there is no worker process in instance mode ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_is_worker_crashed_and_the_pool_recovers() {
    let ex = std::sync::Arc::new(executor(Isolation::Process).await);
    let mut limits = Limits {
        fuel: u64::MAX / 2,
        timeout_ms: 30_000,
        ..Limits::default()
    };
    limits.script.max_operations = 0;
    let running = {
        let ex = ex.clone();
        tokio::spawn(async move {
            ex.invoke(
                "fn handle(req) { loop {} }",
                &InvocationRequest::get("/"),
                &limits,
            )
            .await
        })
    };
    let pid = loop {
        if let Some(pid) = ex.busy_worker_pids().first() {
            break *pid;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // SAFETY: kill(2) on the pid of a worker we own.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let r = running.await.expect("task");
    assert_kind(&r, "worker_crashed", "SIGKILL mid-invocation");
    assert!(r.duration() < Duration::from_secs(10));
    for _ in 0..5 {
        assert_eq!(
            body(&run(&ex, r#"fn handle(req) { "back" }"#).await),
            "back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sees_its_own_sandbox() {
    let ex = executor(Isolation::Process).await;
    let report = ex.diagnose().await.expect("diagnostics");
    let field = |name: &str| {
        report
            .status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{name} missing from {}", report.status))
            .to_string()
    };
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2");
    let mut expected = vec![report.channel_fd];
    expected.extend(report.module_fd);
    expected.sort_unstable();
    let mut fds = report.fds.clone();
    fds.sort_unstable();
    assert_eq!(
        fds, expected,
        "a worker holds only its channel and the module file"
    );
    assert!(
        report.module_fd.is_some(),
        "the module file is mapped from an open descriptor"
    );
    // Escapes: each forbidden call answered by the filter, not by a missing file or process.
    let expected_attempts = [
        "chdir",
        "clone",
        "clone3",
        "execve",
        "execveat",
        "ioctl",
        "io_uring_setup",
        "kill",
        "memfd_create",
        "mkdirat",
        "mount",
        "openat",
        "openat /etc/hostname",
        "prctl",
        "process_vm_readv",
        "ptrace attach",
        "ptrace traceme",
        "setuid",
        "socket inet",
        "socket unix",
        "socketpair",
        "tgkill",
        "unlinkat",
        "unshare",
    ];
    for name in expected_attempts {
        assert!(
            report.attempts.contains_key(name),
            "{name} was not tried: {:?}",
            report.attempts
        );
    }
    let eperm = std::io::Error::from_raw_os_error(libc::EPERM).to_string();
    let holes: Vec<_> = report
        .attempts
        .iter()
        .filter(|(_, outcome)| **outcome != eperm)
        .collect();
    assert!(holes.is_empty(), "calls the filter let through: {holes:?}");
    eprintln!("{} escape attempts, all EPERM", report.attempts.len());
    // Secrets: the test process has a full environment (cargo's, PATH, …); none of it reaches a
    // worker, neither its live environment nor the block in its memory, and its command line is
    // the zygote's marker alone.
    assert!(
        std::env::vars_os().count() > 0,
        "the test itself has an environment"
    );
    assert_eq!(report.environ, "", "the worker's environment block");
    assert_eq!(report.env_vars, 0, "the worker's live environment");
    assert!(
        !report.cmdline.contains('=') && report.cmdline.lines().count() <= 2,
        "the worker's command line: {:?}",
        report.cmdline
    );
    let sandbox = ex.sandbox().expect("process mode reports its sandbox");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(sandbox.dropped_root, "{sandbox:?}");
        assert_eq!(sandbox.uid, 65534);
    }
    eprintln!("sandbox layers: {sandbox:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_are_off_unless_configured() {
    let config = config(Isolation::Process);
    let ex = Executor::start(config).await.expect("starts");
    assert!(ex.diagnose().await.is_err());
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// `(pid, ppid, state)` of every process.
fn processes() -> Vec<(i32, i32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.trim()) else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let state = it.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        out.push((pid, ppid, state));
    }
    out
}

async fn settled(ex: &Executor) {
    for _ in 0..500 {
        let s = ex.stats();
        if s.pending == 0 && s.busy == 0 && s.warm == s.target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pool did not settle: {:?}", ex.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_invocations_leave_no_zombies_or_descriptors() {
    let ex = std::sync::Arc::new(executor(Isolation::Process).await);
    settled(&ex).await;
    // Each warm worker is two descriptors in the server: its channel and its pidfd.
    let baseline = open_fds() - 2 * ex.stats().warm;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..4 {
        let ex = ex.clone();
        tasks.spawn(async move {
            for i in 0..2_500 {
                let r = run(&ex, r#"fn handle(req) { "x" }"#).await;
                assert!(
                    r.outcome.is_ok(),
                    "task {t} invocation {i}: {:?}",
                    r.outcome
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    settled(&ex).await;
    assert_eq!(
        open_fds() - 2 * ex.stats().warm,
        baseline,
        "descriptors leaked"
    );
    let me = std::process::id() as i32;
    let zygote = ex.zygote_pid().expect("zygote");
    // Give the kernel a moment to reap the last workers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let zombies: Vec<_> = processes()
        .into_iter()
        .filter(|&(_, ppid, state)| (ppid == me || ppid == zygote) && state == 'Z')
        .collect();
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
    let stats = ex.stats();
    assert!(stats.spawned_total >= 10_000, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_mode_leaks_no_descriptors() {
    let ex = executor(Isolation::Instance).await;
    run(&ex, r#"fn handle(req) { "x" }"#).await;
    let baseline = open_fds();
    for _ in 0..2_000 {
        assert!(run(&ex, r#"fn handle(req) { "x" }"#).await.outcome.is_ok());
    }
    assert_eq!(open_fds(), baseline);
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the command name.
    fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_grows_under_load_shrinks_when_idle_and_idles_without_cpu() {
    let mut config = config(Isolation::Process);
    config.process.min_warm = 1;
    config.process.max_warm = 8;
    config.process.shrink_after = Duration::from_millis(400);
    let ex = std::sync::Arc::new(Executor::start(config).await.expect("starts"));
    settled(&ex).await;
    assert_eq!(ex.stats().warm, 1);

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let ex = ex.clone();
        tasks.spawn(
            async move { body(&run(&ex, r#"fn handle(req) { "burst" }"#).await).to_string() },
        );
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.expect("task"), "burst");
    }
    let grown = ex.stats();
    assert!(
        grown.misses_total > 0 && grown.target > 1,
        "the pool grew: {grown:?}"
    );
    assert!(grown.target <= 8, "never past max_warm: {grown:?}");

    // Idle: back to the floor once shrink_after has passed without misses.
    tokio::time::sleep(Duration::from_millis(900)).await;
    settled(&ex).await;
    let idle = ex.stats();
    assert_eq!((idle.target, idle.warm), (1, 1), "{idle:?}");

    // And idle means no CPU: the zygote and the warm worker sleep in read(2).
    let zygote = ex.zygote_pid().expect("zygote");
    let mut pids = vec![zygote];
    pids.extend(
        processes()
            .into_iter()
            .filter(|&(_, ppid, state)| ppid == zygote && state != 'Z')
            .map(|(pid, _, _)| pid),
    );
    let before: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    assert!(
        after - before <= 1,
        "idle zygote and workers used {} ticks",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_zygote_is_replaced() {
    let ex = executor(Isolation::Process).await;
    settled(&ex).await;
    let first = ex.zygote_pid().expect("zygote");
    // SAFETY: kill(2) on the zygote this test started.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
    // The warm workers die with it (parent-death signal); invocations that took one fail as
    // worker_crashed, never hang, and the pool comes back with a new zygote.
    let mut replaced = false;
    for _ in 0..200 {
        let r = run(&ex, r#"fn handle(req) { "again" }"#).await;
        assert!(
            matches!(r.outcome, Outcome::Ok | Outcome::WorkerCrashed { .. }),
            "unexpected outcome after the zygote died: {:?}",
            r.outcome
        );
        if r.outcome.is_ok() && ex.zygote_pid().is_some_and(|pid| pid != first) {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(replaced, "a new zygote serves: {:?}", ex.stats());
    for _ in 0..5 {
        assert_eq!(
            body(&run(&ex, r#"fn handle(req) { "steady" }"#).await),
            "steady"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_failures_are_clear_errors() {
    let mut config = ExecutorConfig::new(Isolation::Process, cache_dir());
    config.process.program = Some("/nonexistent/picloud".into());
    let err = Executor::start(config)
        .await
        .expect_err("no zygote program");
    assert!(err.to_string().contains("/nonexistent/picloud"), "{err}");

    for isolation in [Isolation::Process, Isolation::Instance] {
        let config = ExecutorConfig::new(isolation, "/proc/picloud-cannot-write-here");
        let err = Executor::start(config).await.expect_err("unwritable cache");
        assert!(
            err.to_string().contains("/proc/picloud-cannot-write-here"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_reused_only_for_the_same_function_when_configured() {
    use picloud_shared::FunctionRef;
    let mut config = config(Isolation::Process);
    config.process.max_invocations_per_worker = 3;
    let ex = Executor::start(config).await.expect("starts");
    let get = InvocationRequest::get("/");
    let script = r#"let n = 0; n += 1; print(`${n}`); fn handle(req) { "ok" }"#;
    let a = FunctionRef::new("tenant-a", "fn");
    let b = FunctionRef::new("tenant-b", "fn");

    for _ in 0..6 {
        let r = ex.invoke_for(&a, script, &get, &Limits::default()).await;
        assert_eq!(body(&r), "ok");
        assert_eq!(
            r.logs[0].message, "1",
            "a fresh instance even in a reused worker"
        );
    }
    // 6 invocations, 3 per worker: 2 workers, 4 reuses.
    assert_eq!(ex.stats().reused_total, 4, "{:?}", ex.stats());

    // Another tenant's function, and anonymous invocations, never get a's worker.
    let r = ex.invoke_for(&b, script, &get, &Limits::default()).await;
    assert_eq!(body(&r), "ok");
    let r = ex.invoke(script, &get, &Limits::default()).await;
    assert_eq!(body(&r), "ok");
    assert_eq!(ex.stats().reused_total, 4);
    let r = ex.invoke_for(&b, script, &get, &Limits::default()).await;
    assert_eq!(body(&r), "ok");
    assert_eq!(ex.stats().reused_total, 5, "b reuses its own worker");

    // A worker killed for its deadline is not reused.
    let mut slow = Limits {
        timeout_ms: 100,
        fuel: u64::MAX / 2,
        ..Limits::default()
    };
    slow.script.max_operations = 0;
    let c = FunctionRef::new("tenant-c", "fn");
    let r = ex
        .invoke_for(&c, "fn handle(req) { loop {} }", &get, &slow)
        .await;
    assert_kind(&r, "timeout", "deadline");
    let r = ex.invoke_for(&c, script, &get, &Limits::default()).await;
    assert_eq!(body(&r), "ok");
    assert_eq!(ex.stats().reused_total, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_every_worker_serves_one_invocation() {
    let ex = executor(Isolation::Process).await;
    let owner = picloud_shared::FunctionRef::new("tenant", "fn");
    for _ in 0..4 {
        let r = ex
            .invoke_for(
                &owner,
                r#"fn handle(req) { "once" }"#,
                &InvocationRequest::get("/"),
                &Limits::default(),
            )
            .await;
        assert_eq!(body(&r), "once");
    }
    assert_eq!(ex.stats().reused_total, 0);
    assert_eq!(ex.stats().reusable, 0);
}

// ---- fairness between tenants ----

/// Runs `script` as `tenant`'s function `f` with room for a long run.
fn invoke_as(
    ex: &std::sync::Arc<Executor>,
    tenant: &str,
    script: &'static str,
) -> tokio::task::JoinHandle<(InvocationResult, std::time::Instant)> {
    let ex = ex.clone();
    let owner = picloud_shared::FunctionRef::new(tenant, "f");
    tokio::spawn(async move {
        let mut limits = Limits {
            timeout_ms: 30_000,
            fuel: 100_000_000_000,
            ..Limits::default()
        };
        limits.script.max_operations = 0;
        let r = ex
            .invoke_for(&owner, script, &InvocationRequest::get("/"), &limits)
            .await;
        (r, std::time::Instant::now())
    })
}

const BUSY: &str = "fn handle(req) { let n = 0; while n < 300000 { n += 1; } \"busy\" }";
/// About ten times [`BUSY`].
const LONG: &str = "fn handle(req) { let n = 0; while n < 3000000 { n += 1; } \"busy\" }";

/// The kernel's scheduling policy of `pid` (field 41 of /proc/PID/stat; 5 is SCHED_IDLE).
fn policy(pid: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(38)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_second_invocation_yields_the_cpu_and_a_lone_one_does_not() {
    let ex = std::sync::Arc::new(executor(Isolation::Process).await);
    let first = invoke_as(&ex, "noisy", BUSY);
    let pid_first = loop {
        if let Some(pid) = ex.busy_worker_pids().first() {
            break *pid;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let second = invoke_as(&ex, "noisy", BUSY);
    let other = invoke_as(&ex, "quiet", BUSY);
    let mut policies = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while policies.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "three workers were never seen busy: {policies:?}"
        );
        for pid in ex.busy_worker_pids() {
            if let Some(p) = policy(pid) {
                policies.entry(pid).or_insert(p);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for task in [first, second, other] {
        assert_eq!(body(&task.await.expect("task").0), "busy");
    }
    let idle = policies
        .values()
        .filter(|&&p| p == libc::SCHED_IDLE as u32)
        .count();
    assert_eq!(
        policies.get(&pid_first),
        Some(&(libc::SCHED_OTHER as u32)),
        "a tenant's only invocation runs normally: {policies:?}"
    );
    assert_eq!(
        idle, 1,
        "only the noisy tenant's second invocation yields: {policies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_mode_serves_another_tenant_before_a_tenants_queued_flood() {
    let mut config = config(Isolation::Instance);
    config.instance.threads = 1;
    let ex = std::sync::Arc::new(Executor::start(config).await.expect("starts"));
    // One long invocation occupies the only runner; three more of that tenant queue behind it.
    let running = invoke_as(&ex, "noisy", LONG);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let flood: Vec<_> = (0..3).map(|_| invoke_as(&ex, "noisy", BUSY)).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (quiet, quiet_done) = invoke_as(&ex, "quiet", r#"fn handle(req) { "hi" }"#)
        .await
        .expect("task");
    assert_eq!(body(&quiet), "hi");
    let mut later = 0;
    for task in flood {
        let (r, done) = task.await.expect("task");
        assert_eq!(body(&r), "busy");
        later += usize::from(done > quiet_done);
    }
    assert_eq!(body(&running.await.expect("task").0), "busy");
    assert_eq!(
        later, 3,
        "the quiet tenant ran right after the running invocation, before the queued flood"
    );
}

/// Cluster mode: the orchestrator drops an invocation it sent to `picloud-executor` (its client
/// went away); the executor sees the socket close and kills the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_service_stops_an_invocation_whose_orchestrator_went_away() {
    use picloud_executor_core::service;
    use picloud_executor_core::{ExecutorClient, InvocationContext};

    let ex = std::sync::Arc::new(
        Executor::start(config(Isolation::Process))
            .await
            .expect("the executor starts"),
    );
    let socket = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("service-cancel-{}.sock", std::process::id()));
    let listener = service::bind(&socket).expect("bind");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(service::serve(
        listener,
        std::sync::Arc::clone(&ex),
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(5),
    ));
    let client = ExecutorClient::new(&socket);
    let owner = picloud_shared::FunctionRef::new("t", "spin");
    let limits = unbounded_spin_limits();
    let request = InvocationRequest::get("/");
    let spin = r#"fn handle(req) { let x = 0; loop { x += 1; } }"#;
    let invocation = Box::pin(client.invoke_with(
        &owner,
        spin,
        &request,
        &limits,
        InvocationContext::default(),
    ));
    let outcome = tokio::time::timeout(Duration::from_millis(300), invocation).await;
    assert!(outcome.is_err(), "the spin answered: {outcome:?}");
    // The timeout dropped the client's future, and with it the connection.
    let dropped = std::time::Instant::now();
    loop {
        if ex.busy_worker_pids().is_empty() {
            break;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(5),
            "the worker still runs: {:?}",
            ex.busy_worker_pids()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(());
    assert!(serving.await.expect("served"), "exchanges finished");
}

/// Waiting for a worker counts against the invocation's deadline (before: the deadline started
/// when a worker was found, so an invocation could wait without bound and then run its whole
/// timeout). With no warm worker and the zygote stopped, none can come: the invocation ends
/// `timeout` at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_worker_counts_against_the_deadline() {
    let mut config = config(Isolation::Process);
    config.process.min_warm = 0;
    let ex = Executor::start(config).await.expect("the executor starts");
    let zygote = ex.zygote_pid().expect("a zygote");
    // SAFETY: kill(2) on the zygote this test started; it is continued below.
    assert_eq!(unsafe { libc::kill(zygote, libc::SIGSTOP) }, 0);
    let limits = Limits {
        timeout_ms: 300,
        ..Limits::default()
    };
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        ex.invoke(
            r#"fn handle(req) { "ran" }"#,
            &InvocationRequest::get("/"),
            &limits,
        ),
    )
    .await;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(zygote, libc::SIGCONT) }, 0);
    let result = ended.expect("the invocation ends at its deadline, not when a worker comes");
    assert_eq!(result.outcome.kind(), "timeout", "{result:?}");
    assert_eq!(result.fuel_used, 0, "it never ran");
    // The pool recovers once the zygote runs again.
    assert_eq!(
        body(&run(&ex, r#"fn handle(req) { "after" }"#).await),
        "after"
    );
}
