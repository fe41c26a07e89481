//! `picloud serve` behind a real Caddy running the project's own `caddy/Caddyfile`: functions
//! and the API through the proxy, the body cap enforced at the proxy, `/metrics` not public.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{ADMIN, Caddy, Server, data_dir};
use serde_json::{Value, json};

/// Starts `caddy run` on the project's all-in-one Caddyfile in front of `upstream`.
fn caddy(upstream: &str, dir: &Path) -> Caddy {
    Caddy::start("Caddyfile", &[("PICLOUD_UPSTREAM", upstream)], dir)
}

impl Caddy {
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value, Option<String>) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        let response = match (method, body) {
            ("GET", _) => {
                let mut r = agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, body) => {
                let mut r = agent.post(&url).header("Content-Type", "application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(&body.unwrap_or_default()[..])
            }
        };
        let mut response = response.expect("caddy answers");
        let status = response.status().as_u16();
        let header = response
            .headers()
            .get("x-picloud-test")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            header,
        )
    }
}

#[test]
fn functions_and_the_api_through_caddy() {
    let dir = data_dir("caddy");
    let server = Server::start(&dir, None);
    let proxy = caddy(&server.addr, &dir);

    assert_eq!(proxy.call("GET", "/healthz", None, None).0, 200);
    let create = |body: Value| serde_json::to_vec(&body).expect("json");
    let (s, b, _) = proxy.call(
        "POST",
        "/api/v1/tenants",
        Some(ADMIN),
        Some(create(json!({ "name": "acme" }))),
    );
    assert_eq!(s, 201, "{b}");
    let source = "fn handle(req) { #{ status: 200, headers: #{ \"x-picloud-test\": req.path }, body: `hi ${req.query.name}` } }";
    let (s, b, _) = proxy.call(
        "POST",
        "/api/v1/tenants/acme/functions",
        Some(ADMIN),
        Some(create(
            json!({ "name": "hello", "source": source, "deploy": true }),
        )),
    );
    assert_eq!(s, 201, "{b}");

    // Through the proxy: the function's answer, its headers, path and query intact.
    let (s, b, header) = proxy.call("GET", "/fn/acme/hello/a/b?name=caddy", None, None);
    assert_eq!(
        (s, b, header.as_deref()),
        (200, json!("hi caddy"), Some("/a/b"))
    );
    // An outcome keeps its status and JSON body through the proxy.
    let (s, b, _) = proxy.call("GET", "/fn/acme/missing", None, None);
    assert_eq!((s, &b["error"]["kind"]), (404, &json!("not_found")), "{b}");

    // /metrics is not public (whatever the server answers there directly).
    let (s, b, _) = proxy.call("GET", "/metrics", None, None);
    assert_eq!((s, &b["error"]["kind"]), (404, &json!("not_found")), "{b}");

    // The body cap: 1 MiB passes to the server, one byte more is refused by Caddy.
    let at_cap = vec![b'x'; 1 << 20];
    let (s, _, _) = proxy.call("POST", "/fn/acme/hello", None, Some(at_cap));
    assert_eq!(s, 200);
    let past_cap = vec![b'x'; (1 << 20) + 1];
    let (s, b, _) = proxy.call("POST", "/fn/acme/hello", None, Some(past_cap));
    assert_eq!((s, &b["error"]["kind"]), (413, &json!("too_large")), "{b}");
}
