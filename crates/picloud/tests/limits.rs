//! Fair limits at the function endpoints: request rates per function and per tenant,
//! concurrency per tenant, a short bounded wait for a place — each refusal a 429 with
//! `Retry-After` and a JSON body, counted in the metrics, and never touching another tenant.

mod common;

use std::sync::{Arc, Barrier};

use common::{ADMIN, Http, Server, data_dir};
use serde_json::{Value, json};

/// About 0.4 s of work.
const SLOW: &str = "fn handle(req) { let n = 0; while n < 1000000 { n += 1; } \"slow\" }";

fn deploy(http: &Http, tenant: &str, name: &str, source: &str, limits: Value) {
    let (s, _) = http.get(&format!("/api/v1/tenants/{tenant}"), Some(ADMIN));
    if s == 404 {
        assert_eq!(
            http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": tenant }))
                .0,
            201
        );
    }
    let (s, b) = http.post(
        &format!("/api/v1/tenants/{tenant}/functions"),
        Some(ADMIN),
        json!({ "name": name, "source": source, "deploy": true, "limits": limits }),
    );
    assert_eq!(s, 201, "{b}");
}

/// GETs every path at once; returns (status, Retry-After present, error kind) per path.
fn at_once(server: &Server, paths: &[&str]) -> Vec<(u16, bool, String)> {
    let barrier = Arc::new(Barrier::new(paths.len()));
    let threads: Vec<_> = paths
        .iter()
        .map(|p| {
            let (url, barrier) = (server.url(p), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                barrier.wait();
                let mut r = agent.get(&url).call().expect("answer");
                let retry = r.headers().contains_key("retry-after");
                let body: Value =
                    serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
                        .unwrap_or(Value::Null);
                let kind = body["error"]["message"].as_str().unwrap_or("").to_string();
                (r.status().as_u16(), retry, kind)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect()
}

fn rejected(http: &Http, function: &str, reason: &str) -> f64 {
    let (_, m) = http.get("/metrics", None);
    let needle = format!("function=\"{function}\",reason=\"{reason}\"");
    m.as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("picloud_function_rejected_total") && l.contains(&needle))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(-1.0)
}

#[test]
fn a_function_past_its_rate_is_refused_with_retry_after_and_others_are_not() {
    let server = Server::start_with_args(
        &data_dir("rate"),
        &["--function-rate", "5", "--tenant-rate", "0"],
    );
    let http = Http::new(&server);
    deploy(
        &http,
        "acme",
        "busy",
        "fn handle(req) { \"ok\" }",
        json!({}),
    );
    deploy(
        &http,
        "acme",
        "calm",
        "fn handle(req) { \"ok\" }",
        json!({}),
    );
    let statuses: Vec<u16> = (0..20).map(|_| http.get("/fn/acme/busy", None).0).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (5..20).contains(&ok),
        "a burst of 5, then refusals: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let (s, e) = http.get("/fn/acme/busy", None);
    assert_eq!(
        (s, e["error"]["kind"].as_str()),
        (429, Some("too_many_requests")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rate limit of 5")),
        "{e}"
    );
    // Another function of the same tenant has its own rate.
    assert_eq!(http.get("/fn/acme/calm", None).0, 200);
    assert!(rejected(&http, "busy", "rate") >= 1.0);
    assert_eq!(rejected(&http, "calm", "rate"), 0.0);
    // A second later the bucket has refilled.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(http.get("/fn/acme/busy", None).0, 200);
}

#[test]
fn a_tenant_past_its_rate_is_refused_and_another_tenant_is_not() {
    let server = Server::start_with_args(
        &data_dir("tenant-rate"),
        &["--function-rate", "0", "--tenant-rate", "5"],
    );
    let http = Http::new(&server);
    deploy(&http, "noisy", "a", "fn handle(req) { \"a\" }", json!({}));
    deploy(&http, "noisy", "b", "fn handle(req) { \"b\" }", json!({}));
    deploy(&http, "quiet", "c", "fn handle(req) { \"c\" }", json!({}));
    let statuses: Vec<u16> = (0..20)
        .map(|i| {
            http.get(
                if i % 2 == 0 {
                    "/fn/noisy/a"
                } else {
                    "/fn/noisy/b"
                },
                None,
            )
            .0
        })
        .collect();
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 5,
        "{statuses:?}"
    );
    assert!(rejected(&http, "a", "tenant_rate") + rejected(&http, "b", "tenant_rate") >= 5.0);
    assert_eq!(http.get("/fn/quiet/c", None).0, 200);
}

#[test]
fn tenant_concurrency_refuses_past_a_bounded_wait_and_spares_other_tenants() {
    let server = Server::start_with_args(
        &data_dir("tenant-concurrency"),
        &[
            "--tenant-concurrency",
            "1",
            "--queue-wait-ms",
            "0",
            "--function-rate",
            "0",
        ],
    );
    let http = Http::new(&server);
    let big = json!({ "fuel": 9_000_000_000i64, "timeout_ms": 20_000 });
    deploy(&http, "noisy", "a", SLOW, big.clone());
    deploy(&http, "noisy", "b", SLOW, big.clone());
    deploy(&http, "quiet", "c", SLOW, big);
    let answers = at_once(&server, &["/fn/noisy/a", "/fn/noisy/b", "/fn/quiet/c"]);
    let noisy = &answers[..2];
    assert!(noisy.contains(&(200, false, String::new())), "{answers:?}");
    assert!(
        noisy
            .iter()
            .any(|(s, retry, m)| *s == 429 && *retry && m.contains("this tenant's functions")),
        "{answers:?}"
    );
    assert_eq!(
        answers[2],
        (200, false, String::new()),
        "the quiet tenant is untouched"
    );
}

#[test]
fn a_short_wait_for_a_place_lets_a_request_through_instead_of_refusing_it() {
    let server = Server::start_with_args(
        &data_dir("queue-wait"),
        &["--queue-wait-ms", "5000", "--function-rate", "0"],
    );
    let http = Http::new(&server);
    deploy(
        &http,
        "acme",
        "one",
        SLOW,
        json!({ "concurrency": 1, "fuel": 9_000_000_000i64, "timeout_ms": 20_000 }),
    );
    let answers = at_once(&server, &["/fn/acme/one", "/fn/acme/one"]);
    assert_eq!(
        answers,
        vec![(200, false, String::new()); 2],
        "the second waited its turn"
    );
    assert_eq!(rejected(&http, "one", "concurrency"), 0.0);
}
