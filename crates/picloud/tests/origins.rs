//! Origins in a real browser: `dashboard/tests/origins.mjs` (playwright-core driving Debian's
//! Chromium, headless) against a real `picloud serve`. A function's HTML page with a script,
//! served on its tenant's own host, runs in that host's origin: it cannot read the dashboard's
//! token, storage or cookies, nor register a service worker over the dashboard. The same page
//! in the path form, on the dashboard's origin, runs no script at all (before: it ran there,
//! with the dashboard's token in reach).

mod common;

use std::path::Path;
use std::process::Command;

use common::{ADMIN, Http, Server, data_dir};
use serde_json::json;

/// The page: it reports what it could reach, and tries a service worker over its whole host.
const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>page</title><body><script>
(async () => {
  const out = { origin: location.origin };
  const read = (f) => { try { return f(); } catch (e) { return 'blocked: ' + e.name; } };
  out.session = read(() => sessionStorage.getItem('picloud.token'));
  out.local = read(() => localStorage.getItem('picloud.secret'));
  out.cookie = read(() => document.cookie);
  try {
    await navigator.serviceWorker.register('worker.js', { scope: '/' });
    out.sw = 'registered';
  } catch (e) { out.sw = 'refused: ' + e.name; }
  document.body.dataset.out = JSON.stringify(out);
})();
</script>"#;

/// Serves the page, and a worker script that asks for the whole site as its scope.
const SCRIPT: &str = r#"fn handle(req) {
    if req.path == "/worker.js" {
        return #{ status: 200, headers: #{ "content-type": "text/javascript",
            "service-worker-allowed": "/" }, body: "self.addEventListener('fetch', (e) => {});" };
    }
    #{ status: 200, headers: #{ "content-type": "text/html; charset=utf-8" }, body: env("PAGE") }
}"#;

#[test]
fn a_function_page_runs_in_its_own_origin_never_the_dashboards() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is installed (scripts/setup installs it)"
    );
    let dashboard = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../dashboard"));
    assert!(
        dashboard.join("build/200.html").exists() && dashboard.join("node_modules").exists(),
        "the dashboard is built (scripts/build-dashboard, which scripts/test runs first)"
    );
    let server = Server::start(&data_dir("origins"), None);
    let http = Http::new(&server);
    let (s, b) = http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "t1" }));
    assert_eq!(s, 201, "{b}");
    let (s, b) = http.post(
        "/api/v1/tenants/t1/functions",
        Some(ADMIN),
        json!({ "name": "page", "source": SCRIPT, "deploy": true }),
    );
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["host"], "t1.localhost", "{b}");
    let (s, b) = http.call(
        "PUT",
        "/api/v1/tenants/t1/functions/page/env/PAGE",
        Some(ADMIN),
        common::Body::Json(json!({ "value": PAGE })),
    );
    assert_eq!(s, 200, "{b}");
    let port = server.addr.rsplit(':').next().expect("a port");
    let out = Command::new("node")
        .arg(dashboard.join("tests/origins.mjs"))
        .current_dir(dashboard)
        .env("BASE_URL", format!("http://localhost:{port}"))
        .env("TENANT_URL", format!("http://t1.localhost:{port}"))
        .env("TENANT", "t1")
        .env("TOKEN", ADMIN)
        .output()
        .expect("node runs");
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{said}");
    assert!(out.status.success(), "{said}");
    assert!(said.contains("origins: all steps passed"), "{said}");
}
