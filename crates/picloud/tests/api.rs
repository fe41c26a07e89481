//! The management API over real HTTP against a real `picloud serve`, on both back ends:
//! every route, tenant isolation, revoked tokens, malformed input, restarts, and PostgreSQL
//! connections terminated under the server.

mod common;

use common::{ADMIN, Body, Http, Server, data_dir, fresh_pg, terminate_connections};
use serde_json::{Value, json};

const HELLO: &str = include_str!("../../../examples/hello.rhai");

/// Creates tenant `name` and a token for it; returns the token.
fn tenant_with_token(http: &Http, name: &str) -> String {
    let (s, b) = http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": name }));
    assert_eq!(s, 201, "{b}");
    let (s, b) = http.post(
        &format!("/api/v1/tenants/{name}/tokens"),
        Some(ADMIN),
        json!({ "name": "main" }),
    );
    assert_eq!(s, 201, "{b}");
    let token = b["token"].as_str().expect("token shown once").to_string();
    assert!(token.starts_with("pc_"), "{token}");
    token
}

fn assert_error(status: u16, body: &Value, want: u16, kind: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["kind"], kind, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// The life of a function through the API, then a restart that must keep everything.
fn lifecycle(server: Server) {
    let http = Http::new(&server);
    let a = tenant_with_token(&http, "acme");
    let base = "/api/v1/tenants/acme/functions";

    let (s, me) = http.get("/api/v1/whoami", Some(&a));
    assert_eq!(
        (s, me["tenant"].as_str(), me["admin"].as_bool()),
        (200, Some("acme"), Some(false))
    );

    // Create with a first version, not yet deployed: the endpoint has nothing to run.
    let (s, f) = http.post(base, Some(&a), json!({ "name": "hello", "source": HELLO }));
    assert_eq!(s, 201, "{f}");
    assert_eq!(f["active_version"], Value::Null);
    assert_eq!(f["endpoint"], "/fn/acme/hello");
    assert_eq!(f["limits"]["timeout_ms"], 5000);
    assert_eq!(http.get("/fn/acme/hello", None).0, 404);

    // Deploy v1.
    let (s, f) = http.post(
        &format!("{base}/hello/deploy"),
        Some(&a),
        json!({ "version": 1 }),
    );
    assert_eq!((s, f["active_version"].as_i64()), (200, Some(1)), "{f}");
    let (s, b) = http.get("/fn/acme/hello/x?name=pi", None);
    assert_eq!((s, b), (200, json!("hello pi")));

    // v2 saved and deployed at once.
    let v2 = "fn handle(req) { `v2 ${req.path}` }";
    let (s, v) = http.post(
        &format!("{base}/hello/versions"),
        Some(&a),
        json!({ "source": v2, "deploy": true }),
    );
    assert_eq!(
        (s, v["version"].as_i64(), v["active"].as_bool()),
        (201, Some(2), Some(true)),
        "{v}"
    );
    assert_eq!(v["author"], "main");
    assert_eq!(v["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(http.get("/fn/acme/hello/p", None), (200, json!("v2 /p")));

    // A script that does not compile is refused with its position; v2 keeps serving.
    let (s, e) = http.post(
        &format!("{base}/hello/versions"),
        Some(&a),
        json!({ "source": "fn handle(req) {\n  let x = ;\n}", "deploy": true }),
    );
    assert_error(s, &e, 422, "compile_error");
    assert_eq!(
        (e["error"]["line"].as_u64(), e["error"]["column"].as_u64()),
        (Some(2), Some(11)),
        "{e}"
    );
    let (s, e) = http.post(
        &format!("{base}/hello/versions"),
        Some(&a),
        json!({ "source": "let x = 1;" }),
    );
    assert_error(s, &e, 422, "compile_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("fn handle(req)")),
        "{e}"
    );
    assert_eq!(http.get("/fn/acme/hello/p", None), (200, json!("v2 /p")));

    // Versions: two, immutable, v2 active; the source of each can be read back.
    let (s, list) = http.get(&format!("{base}/hello/versions"), Some(&a));
    assert_eq!(s, 200);
    let numbers: Vec<_> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v["version"].as_i64())
        .collect();
    assert_eq!(numbers, vec![Some(1), Some(2)]);
    let (s, v) = http.get(&format!("{base}/hello/versions/1"), Some(&a));
    assert_eq!((s, v["source"].as_str()), (200, Some(HELLO)));
    assert_eq!(
        http.get(&format!("{base}/hello/versions/9"), Some(&a)).0,
        404
    );

    // Rollback with no version: to the one before; with a version: to it.
    let (s, f) = http.post(&format!("{base}/hello/rollback"), Some(&a), json!({}));
    assert_eq!((s, f["active_version"].as_i64()), (200, Some(1)), "{f}");
    assert_eq!(
        http.get("/fn/acme/hello?name=back", None),
        (200, json!("hello back"))
    );
    let (s, e) = http.post(&format!("{base}/hello/rollback"), Some(&a), json!({}));
    assert_error(s, &e, 409, "conflict");
    let (s, f) = http.post(
        &format!("{base}/hello/rollback"),
        Some(&a),
        json!({ "version": 2 }),
    );
    assert_eq!((s, f["active_version"].as_i64()), (200, Some(2)));

    // Test-invoke: the active version, a saved one, and a source never saved.
    let (s, r) = http.post(
        &format!("{base}/hello/invoke"),
        Some(&a),
        json!({ "request": { "path": "/t" } }),
    );
    assert_eq!(
        (
            s,
            r["outcome"]["kind"].as_str(),
            r["response"]["body"].as_str()
        ),
        (200, Some("ok"), Some("v2 /t")),
        "{r}"
    );
    assert!(r["fuel_used"].as_u64().is_some_and(|f| f > 0), "{r}");
    let (s, r) = http.post(
        &format!("{base}/hello/invoke"),
        Some(&a),
        json!({ "version": 1, "request": { "query": { "name": "one" } } }),
    );
    assert_eq!(
        (s, r["response"]["body"].as_str()),
        (200, Some("hello one")),
        "{r}"
    );
    let (s, r) = http.post(
        &format!("{base}/hello/invoke"),
        Some(&a),
        json!({ "source": "fn handle(req) { print(\"seen\"); throw \"boom\" }" }),
    );
    assert_eq!(
        (s, r["outcome"]["kind"].as_str()),
        (200, Some("script_error")),
        "{r}"
    );
    assert_eq!(r["logs"][0]["message"], "seen", "{r}");

    // Limits: chosen within the ceiling, refused above it; the admin lowers the ceiling.
    let (s, f) = http.call(
        "PATCH",
        &format!("{base}/hello"),
        Some(&a),
        Body::Json(json!({ "limits": { "fuel": 5_000_000, "timeout_ms": 1000 } })),
    );
    assert_eq!(
        (
            s,
            f["limits"]["fuel"].as_u64(),
            f["limits"]["timeout_ms"].as_u64()
        ),
        (200, Some(5_000_000), Some(1000)),
        "{f}"
    );
    let (s, r) = http.post(
        &format!("{base}/hello/invoke"),
        Some(&a),
        json!({ "source": "fn handle(req) { let x = 0; loop { x += 1; } }" }),
    );
    assert_eq!(
        (s, r["outcome"]["kind"].as_str()),
        (200, Some("fuel_exhausted")),
        "{r}"
    );
    let (s, e) = http.call(
        "PATCH",
        &format!("{base}/hello"),
        Some(&a),
        Body::Json(json!({ "limits": { "timeout_ms": 120_000 } })),
    );
    assert_error(s, &e, 422, "invalid");
    let (s, e) = http.call(
        "PUT",
        "/api/v1/tenants/acme/ceilings",
        Some(&a),
        Body::Json(json!({ "timeout_ms": 500 })),
    );
    assert_error(s, &e, 403, "forbidden");
    let (s, t) = http.call(
        "PUT",
        "/api/v1/tenants/acme/ceilings",
        Some(ADMIN),
        Body::Json(json!({ "timeout_ms": 500 })),
    );
    assert_eq!(
        (s, t["ceilings"]["timeout_ms"].as_u64()),
        (200, Some(500)),
        "{t}"
    );
    let (_, f) = http.get(&format!("{base}/hello"), Some(&a));
    assert_eq!(
        f["limits"]["timeout_ms"], 500,
        "a lowered ceiling binds: {f}"
    );
    assert_eq!(f["chosen_limits"]["timeout_ms"], 1000, "{f}");

    // Token-protected: anonymous, a bad token or a lower-case scheme with a bad token get what
    // a missing function gets (404, the same body); own token 200, whatever the scheme's case.
    let (s, f) = http.call(
        "PATCH",
        &format!("{base}/hello"),
        Some(&a),
        Body::Json(json!({ "public": false })),
    );
    assert_eq!((s, f["public"].as_bool()), (200, Some(false)));
    let (s, e) = http.get("/fn/acme/hello", None);
    assert_error(s, &e, 404, "not_found");
    let missing = http.get("/fn/acme/no-such-function", None);
    assert_eq!((s, e.clone()), missing, "a private function looks missing");
    assert_eq!(http.get("/fn/acme/hello", Some("pc_forged")), missing);
    assert_eq!(
        http.get("/fn/acme/hello/q", Some(&a)),
        (200, json!("v2 /q"))
    );
    let lower = http.get_authorized("/fn/acme/hello/q", &format!("bearer {a}"));
    assert_eq!(
        lower,
        (200, json!("v2 /q")),
        "the scheme is case-insensitive"
    );

    // Env: plain value listed, secret write-only.
    let env = format!("{base}/hello/env");
    let (s, v) = http.call(
        "PUT",
        &format!("{env}/GREETING"),
        Some(&a),
        Body::Json(json!({ "value": "hi" })),
    );
    assert_eq!((s, v["value"].as_str()), (200, Some("hi")), "{v}");
    let (s, v) = http.call(
        "PUT",
        &format!("{env}/API_KEY"),
        Some(&a),
        Body::Json(json!({ "value": "s3cret", "secret": true })),
    );
    assert_eq!((s, &v["value"]), (200, &Value::Null), "{v}");
    let (s, list) = http.get(&env, Some(&a));
    assert_eq!(s, 200);
    assert_eq!(
        list,
        json!([
            { "name": "API_KEY", "value": null, "secret": true },
            { "name": "GREETING", "value": "hi", "secret": false },
        ])
    );
    assert!(!list.to_string().contains("s3cret"));
    assert_eq!(
        http.call("DELETE", &format!("{env}/GREETING"), Some(&a), Body::None)
            .0,
        204
    );
    assert_eq!(
        http.call("DELETE", &format!("{env}/GREETING"), Some(&a), Body::None)
            .0,
        404
    );

    // A second function, then deleted.
    let (s, _) = http.post(
        base,
        Some(&a),
        json!({ "name": "gone", "source": HELLO, "deploy": true }),
    );
    assert_eq!(s, 201);
    assert_eq!(http.get("/fn/acme/gone", None).0, 200);
    assert_eq!(
        http.call("DELETE", &format!("{base}/gone"), Some(&a), Body::None)
            .0,
        204
    );
    assert_eq!(http.get("/fn/acme/gone", None).0, 404);
    let (s, e) = http.post(base, Some(&a), json!({ "name": "hello" }));
    assert_error(s, &e, 409, "conflict");

    // Tokens: list shows no secret; a second token, revoked, stops working at once.
    let (s, t) = http.post(
        "/api/v1/tenants/acme/tokens",
        Some(&a),
        json!({ "name": "ci" }),
    );
    assert_eq!(s, 201);
    let ci = t["token"].as_str().expect("token").to_string();
    assert_eq!(http.get(base, Some(&ci)).0, 200);
    // A second live token of the same name is refused, naming the first.
    let (s, e) = http.post(
        "/api/v1/tenants/acme/tokens",
        Some(&a),
        json!({ "name": "ci" }),
    );
    assert_error(s, &e, 409, "conflict");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("(id {})", t["id"]))),
        "{e}"
    );
    let (_, list) = http.get("/api/v1/tenants/acme/tokens", Some(&a));
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    assert!(
        !list.to_string().contains(&ci) && list[0].get("token").is_none(),
        "{list}"
    );
    let id = t["id"].as_i64().expect("id");
    assert_eq!(
        http.call(
            "DELETE",
            &format!("/api/v1/tenants/acme/tokens/{id}"),
            Some(&a),
            Body::None
        )
        .0,
        204
    );
    let (s, e) = http.get(base, Some(&ci));
    assert_error(s, &e, 401, "unauthorized");

    // Restart (SIGTERM, start again): functions, versions, active version, tokens, env and
    // ceilings are all still there, and the revoked token stays revoked.
    let server = server.restart();
    let http = Http::new(&server);
    let (s, f) = http.get(&format!("{base}/hello"), Some(&a));
    assert_eq!(
        (s, f["active_version"].as_i64(), f["public"].as_bool()),
        (200, Some(2), Some(false)),
        "{f}"
    );
    assert_eq!(f["limits"]["timeout_ms"], 500);
    assert_eq!(
        http.get(&format!("{base}/hello/versions"), Some(&a))
            .1
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let (_, list) = http.get(&env, Some(&a));
    assert_eq!(
        list,
        json!([{ "name": "API_KEY", "value": null, "secret": true }])
    );
    assert_eq!(http.get(base, Some(&ci)).0, 401);
    assert_eq!(
        http.get("/fn/acme/hello/r", Some(&a)),
        (200, json!("v2 /r"))
    );
}

#[test]
fn lifecycle_on_sqlite() {
    lifecycle(Server::start(&data_dir("life-sqlite"), None));
}

#[test]
fn lifecycle_on_postgres() {
    lifecycle(Server::start(&data_dir("life-pg"), Some(&fresh_pg())));
}

/// Every tenant-scoped route, with a body where it takes one.
fn tenant_routes(tenant: &str) -> Vec<(&'static str, String, Option<Value>)> {
    let t = format!("/api/v1/tenants/{tenant}");
    let f = format!("{t}/functions/hello");
    vec![
        ("GET", t.clone(), None),
        ("GET", format!("{t}/tokens"), None),
        ("POST", format!("{t}/tokens"), Some(json!({ "name": "x" }))),
        ("DELETE", format!("{t}/tokens/1"), None),
        ("GET", format!("{t}/functions"), None),
        (
            "POST",
            format!("{t}/functions"),
            Some(json!({ "name": "new" })),
        ),
        ("GET", f.clone(), None),
        ("PATCH", f.clone(), Some(json!({ "public": false }))),
        ("GET", format!("{f}/versions"), None),
        (
            "POST",
            format!("{f}/versions"),
            Some(json!({ "source": HELLO })),
        ),
        ("GET", format!("{f}/versions/1"), None),
        (
            "PATCH",
            format!("{f}/versions/1"),
            Some(json!({ "pinned": true })),
        ),
        (
            "POST",
            format!("{f}/versions/prune"),
            Some(json!({ "keep": 0 })),
        ),
        ("GET", format!("{t}/kv"), None),
        ("GET", format!("{t}/kv/entry?key=k"), None),
        ("DELETE", format!("{t}/kv/entry?key=k"), None),
        ("POST", format!("{f}/deploy"), Some(json!({ "version": 1 }))),
        (
            "POST",
            format!("{f}/rollback"),
            Some(json!({ "version": 1 })),
        ),
        ("GET", format!("{f}/env"), None),
        ("PUT", format!("{f}/env/KEY"), Some(json!({ "value": "v" }))),
        ("DELETE", format!("{f}/env/KEY"), None),
        ("POST", format!("{f}/invoke"), Some(json!({}))),
        ("GET", format!("{f}/invocations"), None),
        ("GET", format!("{f}/invocations/tail"), None),
        ("GET", format!("{f}/schedules"), None),
        (
            "POST",
            format!("{f}/schedules"),
            Some(json!({ "cron": "@daily" })),
        ),
        ("GET", format!("{f}/schedules/1"), None),
        (
            "PATCH",
            format!("{f}/schedules/1"),
            Some(json!({ "enabled": false })),
        ),
        ("GET", format!("{f}/schedules/1/runs"), None),
        ("DELETE", format!("{f}/schedules/1"), None),
        ("DELETE", f.clone(), None),
    ]
}

#[test]
fn a_tenant_reaches_nothing_of_another_and_revoked_tokens_nothing_at_all() {
    let server = Server::start(&data_dir("isolation"), None);
    let http = Http::new(&server);
    let a = tenant_with_token(&http, "alpha");
    let b = tenant_with_token(&http, "beta");
    let (s, _) = http.post(
        "/api/v1/tenants/beta/functions",
        Some(&b),
        json!({ "name": "hello", "source": HELLO, "deploy": true }),
    );
    assert_eq!(s, 201);
    http.call(
        "PUT",
        "/api/v1/tenants/beta/functions/hello/env/KEY",
        Some(&b),
        Body::Json(json!({ "value": "v" })),
    );

    // Alpha's token on every route of beta: 404, exactly as for a tenant that does not exist.
    for (method, path, body) in tenant_routes("beta") {
        let body = body.map_or(Body::None, Body::Json);
        let (s, e) = http.call(method, &path, Some(&a), body);
        assert_error(s, &e, 404, "not_found");
        assert_eq!(
            e["error"]["message"], "no such tenant",
            "{method} {path}: {e}"
        );
    }
    // Admin-only routes: 403 for a tenant, its own tenant's included.
    for (method, path, body) in [
        ("GET", "/api/v1/tenants", Body::None),
        ("GET", "/api/v1/admin/tokens", Body::None),
        (
            "PATCH",
            "/api/v1/tenants/beta",
            Body::Json(json!({ "sub_minute_schedules": true })),
        ),
        ("DELETE", "/api/v1/tenants/beta", Body::None),
        ("DELETE", "/api/v1/tenants/alpha", Body::None),
        (
            "PUT",
            "/api/v1/tenants/alpha/ceilings",
            Body::Json(json!({ "fuel": 5 })),
        ),
    ] {
        let (s, e) = http.call(method, path, Some(&a), body);
        assert_error(s, &e, 403, "forbidden");
    }
    let (s, e) = http.post("/api/v1/tenants", Some(&a), json!({ "name": "mine" }));
    assert_error(s, &e, 403, "forbidden");
    // Beta's function and its variable are untouched, and beta still reaches all of it.
    let (s, f) = http.get("/api/v1/tenants/beta/functions/hello", Some(&b));
    assert_eq!(
        (s, f["public"].as_bool(), f["active_version"].as_i64()),
        (200, Some(true), Some(1))
    );
    assert_eq!(
        http.get("/api/v1/tenants/beta/functions/hello/env", Some(&b))
            .1
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // A token-protected function of beta does not answer alpha's token either.
    http.call(
        "PATCH",
        "/api/v1/tenants/beta/functions/hello",
        Some(&b),
        Body::Json(json!({ "public": false })),
    );
    assert_error(
        http.get("/fn/beta/hello", Some(&a)).0,
        &http.get("/fn/beta/hello", Some(&a)).1,
        404,
        "not_found",
    );
    assert_eq!(http.get("/fn/beta/hello", Some(&b)).0, 200);

    // Revoke beta's token (by the admin): 401 on every route, its own included.
    let (_, list) = http.get("/api/v1/tenants/beta/tokens", Some(ADMIN));
    let id = list[0]["id"].as_i64().expect("id");
    assert_eq!(
        http.call(
            "DELETE",
            &format!("/api/v1/tenants/beta/tokens/{id}"),
            Some(ADMIN),
            Body::None
        )
        .0,
        204
    );
    for (method, path, body) in tenant_routes("beta") {
        let body = body.map_or(Body::None, Body::Json);
        let (s, e) = http.call(method, &path, Some(&b), body);
        assert_error(s, &e, 401, "unauthorized");
    }
    assert_error(
        http.get("/api/v1/whoami", Some(&b)).0,
        &http.get("/api/v1/whoami", Some(&b)).1,
        401,
        "unauthorized",
    );
    // No token, a malformed header, an unknown token: 401 too.
    assert_error(
        http.get("/api/v1/whoami", None).0,
        &http.get("/api/v1/whoami", None).1,
        401,
        "unauthorized",
    );
    let (s, e) = http.get("/api/v1/whoami", Some("pc_0000"));
    assert_error(s, &e, 401, "unauthorized");
    // The last admin token cannot be revoked (nobody could administer any more).
    let (_, admins) = http.get("/api/v1/admin/tokens", Some(ADMIN));
    let id = admins[0]["id"].as_i64().expect("id");
    let (s, e) = http.call(
        "DELETE",
        &format!("/api/v1/admin/tokens/{id}"),
        Some(ADMIN),
        Body::None,
    );
    assert_error(s, &e, 409, "conflict");
}

#[test]
fn malformed_input_gets_a_json_4xx_never_a_500() {
    let server = Server::start(&data_dir("malformed"), None);
    let http = Http::new(&server);
    let a = tenant_with_token(&http, "acme");
    let fns = "/api/v1/tenants/acme/functions";
    let json_ct = "application/json";
    let cases: Vec<(&str, String, Body, u16, &str)> = vec![
        (
            "POST",
            fns.into(),
            Body::Raw(json_ct, b"{\"name\": "),
            400,
            "bad_request",
        ),
        (
            "POST",
            fns.into(),
            Body::Raw(json_ct, b"\xff\xfe"),
            400,
            "bad_request",
        ),
        (
            "POST",
            fns.into(),
            Body::Raw("text/plain", b"{\"name\":\"x\"}"),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            fns.into(),
            Body::Json(json!({ "name": 5 })),
            422,
            "invalid",
        ),
        (
            "POST",
            fns.into(),
            Body::Json(json!([1, 2])),
            422,
            "invalid",
        ),
        (
            "POST",
            fns.into(),
            Body::Json(json!({ "name": "x", "surprise": 1 })),
            422,
            "invalid",
        ),
        (
            "POST",
            fns.into(),
            Body::Json(json!({ "name": "Bad_Name" })),
            422,
            "invalid",
        ),
        (
            "POST",
            fns.into(),
            Body::Json(json!({ "name": "" })),
            422,
            "invalid",
        ),
        (
            "POST",
            fns.into(),
            Body::Json(json!({ "name": "a".repeat(64) })),
            422,
            "invalid",
        ),
        (
            "POST",
            fns.into(),
            Body::Json(json!({ "name": "x", "limits": { "fuel": -5 } })),
            422,
            "invalid",
        ),
        (
            "POST",
            fns.into(),
            Body::Json(json!({ "name": "x", "limits": { "memory_bytes": "lots" } })),
            422,
            "invalid",
        ),
        (
            "POST",
            "/api/v1/tenants".into(),
            Body::Json(json!({ "name": "../etc" })),
            403,
            "forbidden",
        ),
        (
            "POST",
            format!("{fns}/nope/deploy"),
            Body::Json(json!({ "version": 1 })),
            404,
            "not_found",
        ),
        (
            "GET",
            format!("{fns}/hello/versions/not-a-number"),
            Body::None,
            400,
            "bad_request",
        ),
        (
            "GET",
            format!("{fns}/hello/versions/99999999999999"),
            Body::None,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/nothing-here".into(),
            Body::None,
            404,
            "not_found",
        ),
        (
            "PUT",
            fns.into(),
            Body::Json(json!({})),
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            format!("{fns}/hello/versions"),
            Body::None,
            415,
            "unsupported_media_type",
        ),
    ];
    for (method, path, body, want, kind) in cases {
        let (s, e) = http.call(method, &path, Some(&a), body);
        assert_error(s, &e, want, kind);
    }
    // Admin: bad tenant names and bad ceilings.
    let (s, e) = http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "../etc" }));
    assert_error(s, &e, 422, "invalid");
    let (s, e) = http.call(
        "PUT",
        "/api/v1/tenants/acme/ceilings",
        Some(ADMIN),
        Body::Json(json!({ "concurrency": 100000 })),
    );
    assert_error(s, &e, 422, "invalid");

    // Sizes: a script past 256 KiB is 413 and so is a body past 1 MiB; at the edge it is fine.
    let (s, _) = http.post(
        fns,
        Some(&a),
        json!({ "name": "hello", "source": HELLO, "deploy": true }),
    );
    assert_eq!(s, 201);
    let big_script = format!("fn handle(req) {{ \"\" }}\n//{}", "x".repeat(256 << 10));
    let (s, e) = http.post(
        &format!("{fns}/hello/versions"),
        Some(&a),
        json!({ "source": big_script }),
    );
    assert_error(s, &e, 413, "too_large");
    let fits = format!(
        "fn handle(req) {{ \"fits\" }}\n//{}",
        "x".repeat((256 << 10) - 40)
    );
    let (s, e) = http.post(
        &format!("{fns}/hello/versions"),
        Some(&a),
        json!({ "source": fits }),
    );
    assert_eq!(s, 201, "{e}");
    // Past the cap: written while the answer is read, as curl does (the server may answer
    // from the declared length and close before it has read the body).
    let huge = vec![b' '; (1 << 20) + 1];
    let (s, e) = common::send_while_reading(
        &server.addr,
        "POST",
        &format!("{fns}/hello/versions"),
        Some(&a),
        json_ct,
        huge.clone(),
    );
    assert_error(s, &e, 413, "too_large");
    let (s, e) = common::send_while_reading(
        &server.addr,
        "POST",
        "/fn/acme/hello",
        None,
        "text/plain",
        huge,
    );
    assert_error(s, &e, 413, "too_large");
    // Variables: bad names, oversize values.
    let (s, e) = http.call(
        "PUT",
        &format!("{fns}/hello/env/1BAD"),
        Some(&a),
        Body::Json(json!({ "value": "v" })),
    );
    assert_error(s, &e, 422, "invalid");
    let (s, e) = http.call(
        "PUT",
        &format!("{fns}/hello/env/OK"),
        Some(&a),
        Body::Json(json!({ "value": "v".repeat(40_000) })),
    );
    assert_error(s, &e, 413, "too_large");
    // Rollback and test-invoke take an empty body as "no options" (v1 is active: nothing
    // before it).
    let (s, e) = http.call(
        "POST",
        &format!("{fns}/hello/rollback"),
        Some(&a),
        Body::None,
    );
    assert_error(s, &e, 409, "conflict");
    assert_eq!(e["error"]["message"], "no version before 1 to roll back to");
    let (s, r) = http.call("POST", &format!("{fns}/hello/invoke"), Some(&a), Body::None);
    assert_eq!((s, r["outcome"]["kind"].as_str()), (200, Some("ok")), "{r}");
    // The server is still well.
    assert_eq!(
        http.get("/fn/acme/hello", None),
        (200, json!("hello world"))
    );
}

#[test]
fn function_concurrency_limit_answers_429() {
    let server = Server::start(&data_dir("concurrency"), None);
    let http = Http::new(&server);
    let a = tenant_with_token(&http, "acme");
    let slow = "fn handle(req) { let n = 0; while n < 1000000 { n += 1; } \"done\" }";
    let (s, f) = http.post(
        "/api/v1/tenants/acme/functions",
        Some(&a),
        json!({ "name": "slow", "source": slow, "deploy": true, "limits": { "concurrency": 1, "fuel": 9000000000i64, "timeout_ms": 20000 } }),
    );
    assert_eq!(s, 201, "{f}");
    // Four at once, each running ~0.4 s: one at a time runs, the others are refused at once
    // with Retry-After rather than queued.
    let url = server.url("/fn/acme/slow");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                barrier.wait();
                let r = agent.get(&url).call().expect("answer");
                let retry = r.headers().get("retry-after").is_some();
                (r.status().as_u16(), retry)
            })
        })
        .collect();
    let mut answers: Vec<(u16, bool)> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    answers.sort();
    assert!(answers.contains(&(200, false)), "{answers:?}");
    assert!(answers.contains(&(429, true)), "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| *a == (200, false) || *a == (429, true)),
        "{answers:?}"
    );
    // Once they are done, the function runs again.
    assert_eq!(http.get("/fn/acme/slow", None), (200, json!("done")));
}

#[test]
fn postgres_connections_terminated_under_the_server_are_replaced() {
    let url = fresh_pg();
    let server = Server::start(&data_dir("pg-terminate"), Some(&url));
    let http = Http::new(&server);
    let a = tenant_with_token(&http, "acme");
    let (s, _) = http.post(
        "/api/v1/tenants/acme/functions",
        Some(&a),
        json!({ "name": "hello", "source": HELLO, "deploy": true }),
    );
    assert_eq!(s, 201);
    for round in 0..3 {
        let killed = terminate_connections(&url);
        assert!(
            killed > 0,
            "round {round}: the server held no connection to terminate"
        );
        // Every request after the termination is served: dead connections are dropped and
        // replaced, not handed out.
        for i in 0..5 {
            let (s, b) = http.get(&format!("/fn/acme/hello?name=r{round}i{i}"), None);
            assert_eq!((s, b), (200, json!(format!("hello r{round}i{i}"))));
            let (s, b) = http.get("/api/v1/tenants/acme/functions/hello", Some(&a));
            assert_eq!(s, 200, "{b}");
        }
    }
    assert_eq!(http.get("/readyz", None).0, 200);
}

#[test]
fn the_openapi_document_covers_every_route_and_docs_api_md_lists_them() {
    let server = Server::start(&data_dir("openapi"), None);
    let http = Http::new(&server);
    let (s, doc) = http.get("/api/v1/openapi.json", None);
    assert_eq!(s, 200, "served without a token");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut want: Vec<(String, String)> = tenant_routes("{tenant}")
        .into_iter()
        .map(|(m, p, _)| {
            let p = p
                .replace("/functions/hello", "/functions/{function}")
                .replace("/tokens/1", "/tokens/{id}")
                .replace("/versions/1", "/versions/{version}")
                .replace("/env/KEY", "/env/{name}")
                .replace("/schedules/1", "/schedules/{id}")
                .replace("?key=k", "");
            (m.to_lowercase(), p)
        })
        .collect();
    for (m, p) in [
        ("get", "/api/v1/whoami"),
        ("get", "/api/v1/metrics"),
        ("get", "/api/v1/tenants"),
        ("post", "/api/v1/tenants"),
        ("put", "/api/v1/tenants/{tenant}/ceilings"),
        ("patch", "/api/v1/tenants/{tenant}"),
        ("delete", "/api/v1/tenants/{tenant}"),
        ("get", "/api/v1/admin/tokens"),
        ("post", "/api/v1/admin/tokens"),
        ("delete", "/api/v1/admin/tokens/{id}"),
        ("post", "/api/v1/format"),
        ("get", "/api/v1/tenants/{tenant}/functions/{function}/stats"),
    ] {
        want.push((m.into(), p.into()));
    }
    for (method, path) in &want {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    let documented: usize = paths
        .values()
        .map(|p| p.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(
        documented,
        want.len(),
        "a route is documented that this test does not know: {:?}",
        paths.keys()
    );

    let api_md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"))
        .expect("docs/api.md");
    for (method, path) in &want {
        let line = format!("{} {path}", method.to_uppercase());
        assert!(
            api_md.contains(&line),
            "docs/api.md does not describe `{line}`"
        );
    }
}

#[test]
fn format_answers_the_formatted_script_or_the_first_parse_error() {
    let server = Server::start(&data_dir("format"), None);
    let http = Http::new(&server);
    let a = tenant_with_token(&http, "acme");
    let (s, b) = http.post(
        "/api/v1/format",
        Some(&a),
        json!({ "source": "fn handle(req){let x=1+2;x}" }),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["formatted"],
        "fn handle(req) {\n\tlet x = 1 + 2;\n\tx\n}\n"
    );
    let (s, b) = http.post(
        "/api/v1/format",
        Some(&a),
        json!({ "source": "fn handle(req) {\n  let x = ;\n}" }),
    );
    assert_error(s, &b, 422, "compile_error");
    assert_eq!(
        (b["error"]["line"].as_u64(), b["error"]["column"].as_u64()),
        (Some(2), Some(11)),
        "{b}"
    );
    let (s, b) = http.post("/api/v1/format", None, json!({ "source": "1" }));
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = http.post(
        "/api/v1/format",
        Some(&a),
        json!({ "source": "x".repeat(300 << 10) }),
    );
    assert_error(s, &b, 413, "too_large");
    // Past the body cap itself, the size is said in the same words, not axum's ("Failed to
    // buffer the request body").
    let (s, b) = http.post(
        "/api/v1/format",
        Some(&a),
        json!({ "source": "x".repeat(1_100_000) }),
    );
    assert_error(s, &b, 413, "too_large");
    let message = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("bytes, more than this server takes") && !message.contains("buffer"),
        "{b}"
    );
    // A wrong type is told in JSON's words, not Rust's.
    let (s, b) = http.post(
        "/api/v1/tenants/acme/functions",
        Some(&a),
        json!({ "name": "typed", "limits": "lots" }),
    );
    assert_eq!(s, 422, "{b}");
    let message = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("expected an object") && !message.contains("struct"),
        "{b}"
    );
    let (s, b) = http.post("/api/v1/format", Some(&a), json!({ "text": "1" }));
    assert_eq!(s / 100, 4, "{b}");
}
