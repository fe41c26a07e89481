//! Invocation records through the server: every invocation is recorded (endpoint and
//! test-invoke), queried with filters, tailed live as server-sent events, shown by the CLI, and
//! under load every invocation is either a record or counted as dropped.

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::{ADMIN, Http, Server, data_dir};
use serde_json::{Value, json};

const FNS: &str = "/api/v1/tenants/acme/functions";

fn setup(http: &Http) {
    assert_eq!(
        http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "acme" }))
            .0,
        201
    );
    let source = "fn handle(req) { print(`got ${req.path}`); if req.path == \"/fail\" { throw \"failed\" } \"ok\" }";
    let (s, b) = http.post(
        FNS,
        Some(ADMIN),
        json!({ "name": "f", "source": source, "deploy": true }),
    );
    assert_eq!(s, 201, "{b}");
}

/// Polls the record list until it holds `n` records.
fn records(http: &Http, query: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, list) = http.get(&format!("{FNS}/f/invocations{query}"), Some(ADMIN));
        assert_eq!(s, 200, "{list}");
        let list = list.as_array().cloned().unwrap_or_default();
        if list.len() >= n {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "only {} records: {list:?}",
            list.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_invocation_leaves_a_record_that_can_be_queried_and_tailed() {
    let server = Server::start(&data_dir("records"), None);
    let http = Http::new(&server);
    setup(&http);

    // Tail first: a live stream of the function's invocations.
    let url = server.url(&format!("{FNS}/f/invocations/tail"));
    let tail = std::thread::spawn(move || {
        let mut response = ureq::get(&url)
            .header("Authorization", &format!("Bearer {ADMIN}"))
            .call()
            .expect("tail");
        let mut events = Vec::new();
        let reader = BufReader::new(response.body_mut().as_reader());
        for line in reader.lines() {
            let line = line.expect("line");
            if let Some(data) = line.strip_prefix("data:") {
                events.push(serde_json::from_str::<Value>(data.trim()).expect("json"));
                if events.len() == 3 {
                    break;
                }
            }
        }
        events
    });
    std::thread::sleep(Duration::from_millis(300));

    assert_eq!(http.get("/fn/acme/f/a?name=x&api_key=k1", None).0, 200);
    assert_eq!(http.get("/fn/acme/f/fail", None).0, 500);
    let (s, r) = http.post(
        &format!("{FNS}/f/invoke"),
        Some(ADMIN),
        json!({ "request": {
            "path": "/t",
            "query": { "session": "s1", "q": "v" },
            "headers": { "x-api-key": "k", "accept": "text/plain" },
            "body": "é".repeat(1500),
        } }),
    );
    assert_eq!((s, r["outcome"]["kind"].as_str()), (200, Some("ok")));

    let list = records(&http, "", 3);
    assert_eq!(list.len(), 3);
    // Newest first by start time in milliseconds; two warm invocations can start in the same
    // millisecond, and then their (random) ids order them: each is found by what it was.
    let find = |trigger: &str, outcome: &str| {
        list.iter()
            .find(|r| r["trigger"] == trigger && r["outcome"] == outcome)
            .unwrap_or_else(|| panic!("a {trigger} {outcome} record in {list:?}"))
    };
    let (test, fail, ok) = (
        find("test", "ok"),
        find("http", "script_error"),
        find("http", "ok"),
    );
    let ats: Vec<_> = list.iter().filter_map(|r| r["at"].as_i64()).collect();
    assert!(
        ats.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {ats:?}"
    );
    assert_eq!(
        (
            ok["trigger"].as_str(),
            ok["outcome"].as_str(),
            ok["status"].as_u64()
        ),
        (Some("http"), Some("ok"), Some(200))
    );
    assert_eq!(ok["logs"][0]["message"], "got /a");
    // Each record keeps the request it answered, credentials redacted, the body capped.
    assert_eq!(
        (ok["method"].as_str(), ok["path"].as_str()),
        (Some("GET"), Some("/a"))
    );
    assert_eq!(
        ok["request"]["query"],
        json!({ "name": "x", "api_key": "[redacted]" }),
        "{ok}"
    );
    assert_eq!(ok["request"]["truncated"], false);
    let asked = &test["request"];
    assert_eq!(asked["query"], json!({ "session": "[redacted]", "q": "v" }));
    assert_eq!(asked["headers"]["x-api-key"], "[redacted]");
    assert_eq!(asked["headers"]["accept"], "text/plain");
    let body = asked["body"].as_str().expect("body");
    assert_eq!(
        (body.len(), asked["truncated"].as_bool()),
        (2048, Some(true))
    );
    assert!(
        body.chars().all(|c| c == 'é'),
        "cut on a character boundary"
    );
    assert_eq!(ok["version"], 1);
    assert!(
        ok["fuel_used"].as_u64().is_some_and(|f| f > 0) && ok["duration_us"].as_u64().is_some()
    );
    assert_eq!(
        (fail["outcome"].as_str(), fail["status"].as_u64()),
        (Some("script_error"), Some(500))
    );
    assert!(
        fail["message"]
            .as_str()
            .is_some_and(|m| m.contains("failed")),
        "{fail}"
    );
    assert_eq!(
        (
            test["trigger"].as_str(),
            test["logs"][0]["message"].as_str()
        ),
        (Some("test"), Some("got /t"))
    );

    // Filters and paging.
    assert_eq!(records(&http, "?outcome=script_error", 1).len(), 1);
    let errors = records(&http, "?outcome=error", 1);
    assert_eq!(
        (errors.len(), errors[0]["outcome"].as_str()),
        (1, Some("script_error")),
        "`error` is every outcome but ok"
    );
    let page = records(&http, "?limit=1", 1);
    assert_eq!(page.len(), 1);
    let next = records(&http, &format!("?limit=5&before={}", page[0]["id"]), 2);
    assert_eq!(next.len(), 2);
    let at = ok["at"].as_i64().expect("at");
    assert_eq!(records(&http, &format!("?until={at}"), 0).len(), 0);
    let (s, e) = http.get(&format!("{FNS}/f/invocations?limit=many"), Some(ADMIN));
    assert_eq!(
        (s, e["error"]["kind"].as_str()),
        (400, Some("bad_request")),
        "{e}"
    );
    let (s, e) = http.get(&format!("{FNS}/f/invocations?colour=red"), Some(ADMIN));
    assert_eq!(s, 400, "{e}");
    // Out of range is refused with the range, not clamped without a word.
    for (query, says) in [
        (
            "invocations?limit=0",
            "`limit` is 0; it must be from 1 to 1000",
        ),
        (
            "invocations?limit=5000",
            "`limit` is 5000; it must be from 1 to 1000",
        ),
        (
            "invocations?outcome=bogus",
            "it must be one of ok, script_error",
        ),
        (
            "stats?minutes=0",
            "`minutes` is 0; it must be from 1 to 10080",
        ),
        (
            "stats?buckets=1000",
            "`buckets` is 1000; it must be from 1 to 240",
        ),
    ] {
        let (s, e) = http.get(&format!("{FNS}/f/{query}"), Some(ADMIN));
        assert_eq!(
            (s, e["error"]["kind"].as_str()),
            (400, Some("bad_request")),
            "{query}: {e}"
        );
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{query}: {message}");
    }

    // The tail saw the three, in order, as they happened.
    let events = tail.join().expect("tail thread");
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e["trigger"].as_str(), e["outcome"].as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (Some("http"), Some("ok")),
            (Some("http"), Some("script_error")),
            (Some("test"), Some("ok"))
        ]
    );

    // The CLI shows them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(["fn", "logs", "f", "--tenant", "acme"])
        .env("PICLOUD_SERVER", server.url(""))
        .env("PICLOUD_TOKEN", ADMIN)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("    ")).collect();
    assert_eq!(lines.len(), 4, "a header and three records: {stdout}");
    assert!(lines[0].starts_with("AT (UTC)"), "{stdout}");
    assert!(
        lines[1].contains("http")
            && lines[1].contains(" ok ")
            && lines[1].ends_with("GET /a")
            && lines[3].contains("test"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    [info] got /a") && stdout.contains("failed"),
        "{stdout}"
    );
}

#[test]
fn stats_summarise_the_functions_traffic_from_its_records() {
    let server = Server::start(&data_dir("records-stats"), None);
    let http = Http::new(&server);
    setup(&http);
    for path in ["/a", "/b", "/fail"] {
        let response = ureq::get(&server.url(&format!("/fn/acme/f{path}")))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .expect("the endpoint answers");
        let _ = response.status();
    }
    // A test-invoke is recorded but is not the function's traffic.
    let (s, _) = http.post(&format!("{FNS}/f/invoke"), Some(ADMIN), json!({}));
    assert_eq!(s, 200);
    records(&http, "", 4);

    let (s, stats) = http.get(&format!("{FNS}/f/stats?minutes=5&buckets=5"), Some(ADMIN));
    assert_eq!(s, 200, "{stats}");
    assert_eq!(stats["invocations"], 3, "{stats}");
    assert_eq!(stats["errors"], 1, "{stats}");
    assert_eq!(
        stats["by_outcome"],
        json!({ "ok": 2, "script_error": 1 }),
        "{stats}"
    );
    assert!(
        stats["p50_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{stats}"
    );
    assert!(
        stats["p99_ms"].as_f64() >= stats["p50_ms"].as_f64(),
        "{stats}"
    );
    assert!(stats["last_at"].as_i64().is_some(), "{stats}");
    let buckets = stats["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 5);
    let counted: u64 = buckets
        .iter()
        .filter_map(|b| b["invocations"].as_u64())
        .sum();
    assert_eq!(counted, 3, "{stats}");
    // Bad parameters are a 400; another tenant sees nothing.
    assert_eq!(
        http.get(&format!("{FNS}/f/stats?minutes=x"), Some(ADMIN)).0,
        400
    );
    assert_eq!(
        http.get(&format!("{FNS}/f/stats?what=1"), Some(ADMIN)).0,
        400
    );
    http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "other" }));
    let (_, token) = http.post(
        "/api/v1/tenants/other/tokens",
        Some(ADMIN),
        json!({ "name": "t" }),
    );
    let other = token["token"].as_str().expect("a token");
    assert_eq!(http.get(&format!("{FNS}/f/stats"), Some(other)).0, 404);
}

#[test]
fn ten_thousand_invocations_under_load_are_all_recorded_or_counted_as_dropped() {
    let dir = data_dir("records-load");
    // A small queue, so that the load can overflow it; no rate limit in the way.
    let server = Server::start_with_args(
        &dir,
        &[
            "--records-queue",
            "256",
            "--function-rate",
            "0",
            "--tenant-rate",
            "0",
        ],
    );
    let http = Http::new(&server);
    setup(&http);
    let total = 10_000;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = server.url("/fn/acme/f/x");
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                (0..total / 4)
                    .filter(|_| agent.get(&url).call().is_ok_and(|r| r.status() == 200))
                    .count()
            })
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(ok, total, "every invocation answered 200");

    // Written + dropped = invocations, once the queue is empty.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (written, dropped) = loop {
        let (_, metrics) = http.get("/metrics", None);
        let metrics = metrics.as_str().unwrap_or_default().to_string();
        let value = |name: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or(-1.0) as i64
        };
        let (queued, dropped) = (
            value("picloud_records_queued "),
            value("picloud_records_dropped_total "),
        );
        let written = count_records(&dir);
        if queued == 0 && written + dropped == total as i64 {
            break (written, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "written {written} + dropped {dropped} != {total} (queued {queued})"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("10,000 invocations: {written} records written, {dropped} dropped and counted");
}

fn count_records(dir: &std::path::Path) -> i64 {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=ro", dir.join("picloud.db").display());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM invocations")
                .fetch_one(&mut conn)
                .await
                .expect("count")
        })
}
