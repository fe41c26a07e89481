//! The dashboard in a real browser: `dashboard/tests/e2e.mjs` (playwright-core driving Debian's
//! Chromium, headless) against a real `picloud serve`, at 1280 and 360 pixels wide — log in,
//! create a function, type a script, Format (valid, undo, invalid with its banner), save,
//! deploy, the Test tab's JSON Format (valid, invalid) and Send, the Logs tab (records with
//! their request and date, live tail, a row opened into the whole invocation), the Metrics tab, a refused schedule, settings (variables, a secret, access), a second
//! version, rollback, the list's p50/p99,
//! the tenants and tokens pages; a screenshot of each page at each width.
//! Also: the bundle budget, and what the server answers for dashboard paths.

mod common;

use std::path::Path;
use std::process::Command;

use common::{ADMIN, Server, data_dir};

fn dashboard_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../dashboard"))
}

/// The project's own build step (`scripts/build-dashboard`): npm ci when needed, vite build,
/// and the bundle budget check, which fails the build past 150 KB.
fn build() {
    let script = dashboard_dir().join("../scripts/build-dashboard");
    let status = Command::new(script)
        .status()
        .expect("scripts/build-dashboard runs");
    assert!(status.success(), "the dashboard builds within its budget");
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    build();
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is installed (scripts/setup installs it)"
    );
    // No tenant yet: the browser's first run makes it, as a newcomer would.
    let server = Server::start(&data_dir("dashboard-e2e"), None);

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let out = Command::new("node")
        .arg(dashboard_dir().join("tests/e2e.mjs"))
        .current_dir(dashboard_dir())
        .env("BASE_URL", server.url(""))
        .env("TOKEN", ADMIN)
        .env("TENANT", "demo")
        .env("SCREENSHOTS", &shots)
        .output()
        .expect("node runs");
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("dashboard: all steps passed"), "{said}");
    for page in [
        "login",
        "functions",
        "edit",
        "edit-format-error",
        "edit-error-line",
        "edit-rollback-refused",
        "test",
        "logs",
        "logs-detail",
        "metrics",
        "schedules",
        "schedules-run",
        "settings",
        "tenants",
        "tokens",
    ] {
        for width in [1280, 360] {
            let shot = shots.join(format!("{page}-{width}.png"));
            assert!(shot.exists(), "a screenshot of {page} at {width} px");
        }
    }
    assert!(
        shots.join("functions-empty-1280.png").exists(),
        "a screenshot of the dashboard before the first tenant"
    );
}

#[test]
fn the_server_answers_dashboard_paths_with_the_app_and_api_paths_with_json() {
    build();
    let server = Server::start(&data_dir("dashboard-paths"), None);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str| {
        let res = agent
            .get(&server.url(path))
            .call()
            .expect("the server answers");
        let status = res.status().as_u16();
        let cache = res
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = res.into_body().read_to_string().unwrap_or_default();
        (status, cache, body)
    };
    // The app shell for the root and for the app's own routes (a reload on a function page).
    for path in ["/", "/functions/demo/hello", "/tokens"] {
        let (status, cache, body) = get(path);
        assert_eq!(status, 200, "{path}");
        assert!(
            body.contains("_app/immutable/entry/start"),
            "{path}: {body}"
        );
        assert_eq!(cache, "no-cache", "{path}");
    }
    // A strict policy (issue 19): scripts from the origin and the shell's own bootstrap by its
    // hash, never `unsafe-inline`; no page may frame the dashboard.
    let res = agent
        .get(&server.url("/"))
        .call()
        .expect("the server answers");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let policy = header("content-security-policy");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    let scripts = policy
        .split(';')
        .find(|d| d.trim().starts_with("script-src"))
        .unwrap_or_else(|| panic!("a script-src: {policy}"));
    assert!(
        scripts.contains("'sha256-") && !scripts.contains("unsafe"),
        "{scripts}"
    );
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("x-content-type-options"), "nosniff");
    // A hashed asset: cached for a year.
    let (_, _, shell) = get("/");
    let asset = shell
        .split('"')
        .find(|s| s.starts_with("/_app/immutable/") && s.ends_with(".js"))
        .expect("the shell names its scripts");
    let (status, cache, _) = get(asset);
    assert_eq!(status, 200);
    assert_eq!(cache, "public, max-age=31536000, immutable");
    // Missing assets and unknown API paths are 404s, not the app.
    assert_eq!(get("/_app/immutable/chunks/missing.js").0, 404);
    let (status, _, body) = get("/api/v1/nothing-here");
    assert_eq!(status, 404);
    assert!(body.contains("\"not_found\""), "{body}");
    assert_eq!(get("/fn").0, 404);
}

#[test]
fn the_bundle_budget_is_reported_and_enforced() {
    build();
    let budget = |kb: &str| {
        Command::new("node")
            .arg("scripts/budget.mjs")
            .current_dir(dashboard_dir())
            .env("PICLOUD_BUNDLE_BUDGET_KB", kb)
            .output()
            .expect("node runs")
    };
    let within = budget("150");
    let said = String::from_utf8_lossy(&within.stdout).to_string();
    assert!(within.status.success(), "{said}");
    let kb: f64 = said
        .split("first page load: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the budget line: {said}"));
    assert!(kb > 10.0 && kb <= 150.0, "{kb} KB");
    // The same check fails past a budget the build exceeds.
    assert!(!budget("10").status.success(), "a 10 KB budget is exceeded");
}
