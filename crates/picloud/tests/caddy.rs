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

    // /metrics and the TLS question are not public (whatever the server answers there
    // directly).
    let (s, b, _) = proxy.call("GET", "/metrics", None, None);
    assert_eq!((s, &b["error"]["kind"]), (404, &json!("not_found")), "{b}");
    let (s, b, _) = proxy.call("GET", "/_picloud/tls-ask?domain=acme.localhost", None, None);
    assert_eq!((s, &b["error"]["kind"]), (404, &json!("not_found")), "{b}");

    // The tenant's own host, through the same Caddy (browsers and curl resolve `*.localhost` to
    // loopback; this client's resolver does not, so it names the host in the header), and
    // Caddy passes the host on. Its own origin: no sandbox there; the path form has one.
    let tenant_host = format!("acme.localhost:{}", proxy.port);
    let caddy_addr = format!("127.0.0.1:{}", proxy.port);
    let header = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (s, headers, body) = common::get_on_host(&caddy_addr, &tenant_host, "/hello/c?name=own");
    assert_eq!((s, body.as_str()), (200, "hi own"), "{headers:?}");
    assert_eq!(header(&headers, "x-picloud-test").as_deref(), Some("/c"));
    assert_eq!(header(&headers, "content-security-policy"), None);
    let (_, headers, _) = common::get_on_host(&caddy_addr, &caddy_addr, "/fn/acme/hello");
    assert_eq!(
        header(&headers, "content-security-policy").as_deref(),
        Some("sandbox")
    );
    // The dashboard and the API are not on a tenant's host.
    let (s, _, _) = common::get_on_host(&caddy_addr, &tenant_host, "/api/v1/tenants");
    assert_eq!(s, 404);

    // The body cap: 1 MiB passes to the server, one byte more is refused by Caddy.
    let at_cap = vec![b'x'; 1 << 20];
    let (s, _, _) = proxy.call("POST", "/fn/acme/hello", None, Some(at_cap));
    assert_eq!(s, 200);
    let past_cap = vec![b'x'; (1 << 20) + 1];
    let (s, b, _) = proxy.call("POST", "/fn/acme/hello", None, Some(past_cap));
    assert_eq!((s, &b["error"]["kind"]), (413, &json!("too_large")), "{b}");
}
