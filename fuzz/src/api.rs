//! The API's JSON bodies: arbitrary bytes as the body of each write route, on the real server
//! (`picloud::serve::build`, SQLite, `instance` isolation) driven in-process.
//!
//! Input: one byte picks the route, one the credentials (the admin's, a tenant's, none, a
//! forged one), the rest is the body, sent as `application/json`. Properties: no panic, no 5xx,
//! and every refusal is a JSON error with a `kind`.

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use clap::Parser;
use tower::ServiceExt;

const ADMIN: &str = "pc_fuzz_admin_0123456789abcdef0123456789";

/// Every route that takes a JSON body, on objects the harness created.
const ROUTES: &[(Method, &str)] = &[
    (Method::POST, "/api/v1/tenants"),
    (Method::PUT, "/api/v1/tenants/acme/ceilings"),
    (Method::POST, "/api/v1/tenants/acme/tokens"),
    (Method::POST, "/api/v1/admin/tokens"),
    (Method::POST, "/api/v1/tenants/acme/functions"),
    (Method::PATCH, "/api/v1/tenants/acme/functions/f"),
    (Method::POST, "/api/v1/tenants/acme/functions/f/versions"),
    (Method::POST, "/api/v1/tenants/acme/functions/f/deploy"),
    (Method::POST, "/api/v1/tenants/acme/functions/f/rollback"),
    (Method::PUT, "/api/v1/tenants/acme/functions/f/env/NAME"),
    (Method::POST, "/api/v1/tenants/acme/functions/f/invoke"),
    (Method::POST, "/api/v1/tenants/acme/functions/f/schedules"),
    (
        Method::PATCH,
        "/api/v1/tenants/acme/functions/f/schedules/1",
    ),
    (Method::POST, "/api/v1/format"),
];

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: picloud::serve::ServeArgs,
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: Router,
    tenant_token: String,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = crate::runtime();
        let dir = data_dir();
        let cache = crate::cache_dir();
        let cli = Cli::parse_from([
            "serve".as_ref(),
            "--data-dir".as_ref(),
            dir.as_os_str(),
            "--cache-dir".as_ref(),
            cache.as_os_str(),
            "--isolation".as_ref(),
            "instance".as_ref(),
            "--admin-token".as_ref(),
            ADMIN.as_ref(),
        ]);
        let server = runtime
            .block_on(picloud::serve::build(&cli.serve))
            .expect("the server builds");
        let app = server.app.clone();
        // The server's background tasks live as long as the process.
        std::mem::forget(server);
        let mut h = Harness {
            runtime,
            app,
            tenant_token: String::new(),
        };
        let setup = |h: &Harness, method: Method, path: &str, body: serde_json::Value| {
            let (status, body) = h.send(method, path, Some(ADMIN), body.to_string().into_bytes());
            assert!((200..300).contains(&status), "setup {path}: {status} {body}");
            body
        };
        setup(&h, Method::POST, "/api/v1/tenants", serde_json::json!({ "name": "acme" }));
        setup(
            &h,
            Method::POST,
            "/api/v1/tenants/acme/functions",
            serde_json::json!({ "name": "f", "source": "fn handle(req) { req.json } fn on_schedule(event) { () }", "deploy": true }),
        );
        setup(
            &h,
            Method::POST,
            "/api/v1/tenants/acme/functions/f/schedules",
            serde_json::json!({ "cron": "0 0 1 1 *" }),
        );
        let token = setup(&h, Method::POST, "/api/v1/tenants/acme/tokens", serde_json::json!({ "name": "fuzz" }));
        h.tenant_token = token["token"].as_str().unwrap_or_default().to_string();
        h
    })
}

/// The server's data directory: one per process, since libFuzzer's jobs and the test runner
/// may run several harnesses at once. The harness lives until the process exits and cannot
/// remove its own, so each start removes those of processes that are gone.
fn data_dir() -> std::path::PathBuf {
    let parent = std::env::temp_dir().join("picloud-fuzz-api");
    if let Ok(entries) = std::fs::read_dir(&parent) {
        for entry in entries.flatten() {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = parent.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Harness {
    /// One request through the whole app; its status and body (JSON, or the text as a string).
    fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Body::from(body)).expect("a request");
        self.runtime.block_on(async {
            let response = self.app.clone().oneshot(request).await.expect("infallible");
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
                .await
                .expect("the body");
            let text = String::from_utf8_lossy(&bytes).into_owned();
            (
                status,
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
            )
        })
    }
}

/// Starts the harness (the fuzz targets call it before the first input).
pub fn warm_up() {
    harness();
}

/// Runs the check; returns the answer's status (0 for an input too short to send).
pub fn check(data: &[u8]) -> u16 {
    let h = harness();
    let (route, auth, body) = match data {
        [r, a, rest @ ..] => (*r as usize % ROUTES.len(), *a % 4, rest.to_vec()),
        _ => return 0,
    };
    let (method, path) = &ROUTES[route];
    let token = match auth {
        0 => Some(ADMIN),
        1 => Some(h.tenant_token.as_str()),
        2 => None,
        _ => Some("pc_forged_0123456789abcdef0123456789abcd"),
    };
    let (status, answer) = h.send(method.clone(), path, token, body.clone());
    assert!(
        status < 500,
        "{method} {path} answered {status}: {answer}\nbody: {:?}",
        String::from_utf8_lossy(&body)
    );
    if status >= 400 {
        assert!(
            answer["error"]["kind"].is_string(),
            "{method} {path} refused ({status}) without a JSON error: {answer}"
        );
    }
    status
}
