//! Per-function Prometheus metrics: series pre-set at 0 for every outcome, each outcome counted
//! under its label, series gone with their function, a tenant's view limited to its own,
//! `promtool check metrics` on both endpoints, and a real Prometheus scraping the tenant
//! endpoint with a bearer token.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN, Body, Http, Server, data_dir, free_port, promtool_accepts};
use serde_json::{Value, json};

fn text(http: &Http, path: &str, token: Option<&str>) -> String {
    let (s, body) = http.get(path, token);
    assert_eq!(s, 200, "{body}");
    body.as_str().expect("text").to_string()
}

/// The value of the sample `name{labels}` in an exposition, if present.
fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?.strip_prefix('{')?;
        labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.parse().ok())?
    })
}

fn setup(http: &Http) -> String {
    assert_eq!(
        http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "acme" }))
            .0,
        201
    );
    assert_eq!(
        http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "other" }))
            .0,
        201
    );
    let (_, t) = http.post(
        "/api/v1/tenants/acme/tokens",
        Some(ADMIN),
        json!({ "name": "prom" }),
    );
    let functions = [
        ("acme", "ok", "fn handle(req) { \"fine\" }"),
        ("acme", "throws", "fn handle(req) { throw \"no\" }"),
        ("acme", "spins", "fn handle(req) { loop {} }"),
        (
            "acme",
            "bomb",
            "fn handle(req) { let s = \"xxxxxxxxxxxxxxxx\"; loop { s += s; } }",
        ),
        (
            "acme",
            "deep",
            "fn f(n) { f(n + 1) } fn handle(req) { f(0) }",
        ),
        ("other", "theirs", "fn handle(req) { \"theirs\" }"),
    ];
    for (tenant, name, source) in functions {
        let (s, b) = http.post(
            &format!("/api/v1/tenants/{tenant}/functions"),
            Some(ADMIN),
            json!({ "name": name, "source": source, "deploy": true }),
        );
        assert_eq!(s, 201, "{b}");
    }
    t["token"].as_str().expect("token").to_string()
}

#[test]
fn outcomes_are_counted_per_function_and_tenants_see_only_their_own() {
    let server = Server::start(&data_dir("metrics"), None);
    let http = Http::new(&server);
    let token = setup(&http);

    // Before any invocation: every outcome of every function is there, at 0.
    let all = text(&http, "/metrics", None);
    for function in ["ok", "throws", "spins", "bomb", "deep"] {
        for outcome in picloud_shared::Outcome::KINDS {
            let labels = [
                ("tenant", "acme"),
                ("function", function),
                ("outcome", outcome),
            ];
            assert_eq!(
                sample(&all, "picloud_function_invocations_total", &labels),
                Some(0.0),
                "{function} {outcome}"
            );
        }
    }
    promtool_accepts(&all);

    // Each outcome a tenant can cause, once.
    for (function, outcome) in [
        ("ok", "ok"),
        ("throws", "script_error"),
        ("spins", "fuel_exhausted"),
        ("bomb", "memory_limit"),
        ("deep", "stack_overflow"),
    ] {
        let (s, b) = http.get(&format!("/fn/acme/{function}"), None);
        assert!(
            s == 200 || b["error"]["kind"] == outcome,
            "{function}: {s} {b}"
        );
        let all = text(&http, "/metrics", None);
        let labels = [
            ("tenant", "acme"),
            ("function", function),
            ("outcome", outcome),
        ];
        assert_eq!(
            sample(&all, "picloud_function_invocations_total", &labels),
            Some(1.0),
            "{function}: {b}"
        );
        let count = [("tenant", "acme"), ("function", function)];
        assert_eq!(
            sample(&all, "picloud_function_duration_seconds_count", &count),
            Some(1.0)
        );
        assert_eq!(
            sample(&all, "picloud_function_worker_wait_seconds_count", &count),
            Some(1.0)
        );
    }
    // A test-invoke runs the function but is not its traffic: the counts stay as they were.
    let (s, b) = http.post(
        "/api/v1/tenants/acme/functions/ok/invoke",
        Some(ADMIN),
        json!({ "request": {} }),
    );
    assert_eq!(s, 200, "{b}");
    let all = text(&http, "/metrics", None);
    let ok = [("tenant", "acme"), ("function", "ok"), ("outcome", "ok")];
    assert_eq!(
        sample(&all, "picloud_function_invocations_total", &ok),
        Some(1.0)
    );

    // A timeout: the least timeout with plenty of fuel.
    http.call(
        "PATCH",
        "/api/v1/tenants/acme/functions/spins",
        Some(ADMIN),
        Body::Json(json!({ "limits": { "timeout_ms": 10, "fuel": 10_000_000_000i64 } })),
    );
    let (s, b) = http.get("/fn/acme/spins", None);
    assert_eq!((s, &b["error"]["kind"]), (504, &json!("timeout")), "{b}");
    let all = text(&http, "/metrics", None);
    let labels = [
        ("tenant", "acme"),
        ("function", "spins"),
        ("outcome", "timeout"),
    ];
    assert_eq!(
        sample(&all, "picloud_function_invocations_total", &labels),
        Some(1.0)
    );
    assert!(
        sample(
            &all,
            "picloud_function_fuel_consumed_total",
            &[("function", "ok")]
        )
        .is_some_and(|f| f > 0.0)
    );
    for gauge in [
        "picloud_pool_warm_workers ",
        "picloud_pool_busy_workers ",
        "picloud_pool_cold_starts_total ",
    ] {
        assert!(all.lines().any(|l| l.starts_with(gauge)), "{gauge}: {all}");
    }
    promtool_accepts(&all);

    // The tenant's own endpoint: its series only, never another tenant's or the pool's.
    let mine = text(&http, "/api/v1/metrics", Some(&token));
    assert!(
        mine.contains("function=\"ok\"") && !mine.contains("tenant=\"other\""),
        "{mine}"
    );
    assert!(!mine.contains("picloud_pool_"), "{mine}");
    promtool_accepts(&mine);
    let (s, _) = http.get("/api/v1/metrics", None);
    assert_eq!(s, 401);
    assert!(text(&http, "/api/v1/metrics", Some(ADMIN)).contains("tenant=\"other\""));

    // A deleted function's series disappear.
    assert_eq!(
        http.call(
            "DELETE",
            "/api/v1/tenants/acme/functions/ok",
            Some(ADMIN),
            Body::None
        )
        .0,
        204
    );
    let all = text(&http, "/metrics", None);
    assert!(!all.contains("function=\"ok\""), "{all}");
    assert!(all.contains("function=\"throws\""));
}

#[test]
fn a_real_prometheus_scrapes_the_tenant_endpoint_with_its_token() {
    let dir = data_dir("prometheus");
    let server = Server::start(&dir, None);
    let http = Http::new(&server);
    let token = setup(&http);
    for _ in 0..3 {
        assert_eq!(http.get("/fn/acme/ok", None).0, 200);
    }

    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: picloud\n    metrics_path: /api/v1/metrics\n    authorization:\n      credentials: {token}\n    static_configs:\n      - targets: ['{}']\n",
            server.addr
        ),
    )
    .expect("config");
    let port = free_port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prometheus = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("prometheus is required (scripts/setup installs it): {e}")),
    );

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let query =
        "picloud_function_invocations_total{tenant=\"acme\",function=\"ok\",outcome=\"ok\"}";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = agent
            .get(&format!("http://127.0.0.1:{port}/api/v1/query"))
            .query("query", query)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        let value = answer
            .as_ref()
            .and_then(|a| a["data"]["result"][0]["value"][1].as_str())
            .map(str::to_string);
        if value.as_deref() == Some("3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never read the count: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The scrape target is healthy, so the bearer token was accepted.
    let mut targets = agent
        .get(&format!("http://127.0.0.1:{port}/api/v1/targets"))
        .call()
        .expect("targets");
    let targets: Value =
        serde_json::from_str(&targets.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(
        targets["data"]["activeTargets"][0]["health"], "up",
        "{targets}"
    );
}
