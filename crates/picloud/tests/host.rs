//! What scripts may ask of the platform (DESIGN.md §3): the tenant's key-value store, the
//! function's variables and secrets, the time and random numbers — end to end through
//! `picloud serve`, in both isolation modes and on both stores.

mod common;

use common::{ADMIN, Body, Http, Server, data_dir, fresh_pg};
use serde_json::{Value, json};

const KV: &str = r#"
fn handle(req) {
    let op = req.query.op;
    if op == "set" { kv_set(req.query.key, req.json); return "ok"; }
    if op == "get" { return #{ value: kv_get(req.query.key) }; }
    if op == "del" { return #{ existed: kv_delete(req.query.key) }; }
    if op == "list" {
        if req.query.after != () { return #{ keys: kv_list(req.query.prefix, req.query.after) }; }
        return #{ keys: kv_list(req.query.prefix ?? "") };
    }
    if op == "count" { let n = kv_get("hits") ?? 0; kv_set("hits", n + 1); return n + 1; }
    if op == "long-key" { let k = "k"; k.pad(300, "k"); kv_set(k, 1); }
    if op == "big-value" { let v = "x"; v.pad(70000, "x"); kv_set("big", v); }
    if op == "empty-key" { try { kv_set("", 1); } catch (e) { return `caught: ${e}`; } }
    if op == "spam" { for i in 0..2000 { kv_get("hits"); } }
    "unknown op"
}
"#;

const CONTEXT: &str = r#"
fn handle(req) {
    #{ greeting: env("GREETING"), secret: env("API_KEY"), missing: env("NOPE"),
       now: now(), r1: random(), r2: random() }
}
"#;

fn deploy(http: &Http, tenant: &str, name: &str, source: &str) {
    if http
        .get(&format!("/api/v1/tenants/{tenant}"), Some(ADMIN))
        .0
        == 404
    {
        let (s, b) = http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": tenant }));
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = http.post(
        &format!("/api/v1/tenants/{tenant}/functions"),
        Some(ADMIN),
        json!({ "name": name, "source": source, "deploy": true }),
    );
    assert_eq!(s, 201, "{b}");
}

fn call(http: &Http, path: &str) -> (u16, Value) {
    http.get(path, None)
}

fn set(http: &Http, tenant: &str, key: &str, value: Value) {
    let (s, b) = http.call(
        "POST",
        &format!("/fn/{tenant}/kv?op=set&key={key}"),
        None,
        Body::Json(value),
    );
    assert_eq!((s, b), (200, Value::String("ok".into())));
}

/// A public function's script error: its kind in the answer, its message from the record.
fn script_error(http: &Http, path: &str) -> String {
    let (s, b) = call(http, path);
    assert_eq!(s, 500, "{b}");
    assert_eq!(b["error"]["kind"], "script_error", "{b}");
    let mut names = path.trim_start_matches("/fn/").split(['/', '?']);
    let (tenant, function) = (
        names.next().unwrap_or_default(),
        names.next().unwrap_or_default(),
    );
    let message = http.record_message(tenant, function, &b);
    assert!(
        message.contains(" at line "),
        "the error has the call's position: {b}"
    );
    message
}

/// Everything about the key-value store a tenant can observe from its scripts.
fn kv_works_and_is_per_tenant(server: &Server) {
    let http = Http::new(server);
    deploy(&http, "alpha", "kv", KV);
    deploy(&http, "beta", "kv", KV);

    // What one invocation writes, the next one reads.
    set(
        &http,
        "alpha",
        "profile",
        json!({ "name": "Ada", "langs": ["rhai", 1.5, true, null] }),
    );
    assert_eq!(
        call(&http, "/fn/alpha/kv?op=get&key=profile"),
        (
            200,
            json!({ "value": { "name": "Ada", "langs": ["rhai", 1.5, true, null] } })
        )
    );
    for n in 1..=5 {
        assert_eq!(call(&http, "/fn/alpha/kv?op=count"), (200, json!(n)));
    }

    // Tenant beta sees none of alpha's keys, under the same names, and its writes do not
    // touch alpha's values.
    assert_eq!(
        call(&http, "/fn/beta/kv?op=get&key=profile"),
        (200, json!({ "value": null }))
    );
    assert_eq!(
        call(&http, "/fn/beta/kv?op=list"),
        (200, json!({ "keys": [] }))
    );
    set(&http, "beta", "profile", json!("beta's"));
    assert_eq!(call(&http, "/fn/beta/kv?op=count"), (200, json!(1)));
    assert_eq!(
        call(&http, "/fn/alpha/kv?op=get&key=profile").1["value"]["name"],
        "Ada"
    );
    assert_eq!(call(&http, "/fn/alpha/kv?op=count"), (200, json!(6)));
    assert_eq!(
        call(&http, "/fn/alpha/kv?op=list"),
        (200, json!({ "keys": ["hits", "profile"] }))
    );

    // Prefixes and paging.
    for key in ["user:1", "user:2", "user:3"] {
        set(&http, "alpha", key, json!(1));
    }
    assert_eq!(
        call(&http, "/fn/alpha/kv?op=list&prefix=user:").1,
        json!({ "keys": ["user:1", "user:2", "user:3"] })
    );
    assert_eq!(
        call(&http, "/fn/alpha/kv?op=list&prefix=user:&after=user:1").1,
        json!({ "keys": ["user:2", "user:3"] })
    );
    assert_eq!(
        call(&http, "/fn/alpha/kv?op=del&key=user:2").1,
        json!({ "existed": true })
    );
    assert_eq!(
        call(&http, "/fn/alpha/kv?op=del&key=user:2").1,
        json!({ "existed": false })
    );

    // Caps: clear script errors at the call's line, nothing written.
    let m = script_error(&http, "/fn/alpha/kv?op=long-key");
    assert!(
        m.contains("kv_set: the key is 300 bytes; the limit is 256"),
        "{m}"
    );
    let m = script_error(&http, "/fn/alpha/kv?op=big-value");
    assert!(
        m.contains("kv_set: the value is 70002 bytes as JSON; the limit is 65536"),
        "{m}"
    );
    assert_eq!(
        call(&http, "/fn/alpha/kv?op=get&key=big").1,
        json!({ "value": null })
    );
    let m = script_error(&http, "/fn/alpha/kv?op=spam");
    assert!(m.contains("at most 1000 host calls"), "{m}");
    // A refusal is an ordinary Rhai error: a script may catch it.
    assert_eq!(
        call(&http, "/fn/alpha/kv?op=empty-key"),
        (
            200,
            Value::String("caught: kv_set: the key must not be empty".into())
        )
    );

    // A test-invoke reaches the same store as the endpoint.
    let (s, b) = http.post(
        "/api/v1/tenants/alpha/functions/kv/invoke",
        Some(ADMIN),
        json!({ "request": { "query": { "op": "count" } } }),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["response"]["body"], "7", "{b}");
}

#[test]
fn kv_in_process_mode_on_sqlite() {
    let server = Server::start(&data_dir("host-kv-sqlite"), None);
    kv_works_and_is_per_tenant(&server);
}

#[test]
fn kv_in_instance_mode_on_postgres() {
    let url = fresh_pg();
    let server = Server::start_on(
        &data_dir("host-kv-pg"),
        Some(&url),
        &["--isolation", "instance"],
    );
    kv_works_and_is_per_tenant(&server);
}

#[test]
fn kv_quota_is_a_clear_script_error() {
    let server = Server::start_on(
        &data_dir("host-kv-quota"),
        None,
        &["--kv-max-keys", "3", "--kv-max-bytes", "1000"],
    );
    let http = Http::new(&server);
    deploy(&http, "small", "kv", KV);
    for key in ["a", "b", "c"] {
        set(&http, "small", key, json!(1));
    }
    let (s, b) = http.call(
        "POST",
        "/fn/small/kv?op=set&key=d",
        None,
        Body::Json(json!(1)),
    );
    assert_eq!(s, 500, "{b}");
    let m = http.record_message("small", "kv", &b);
    assert!(
        m.contains("kv_set: the tenant's key-value store is full: it may hold 3 keys"),
        "{m}"
    );
    // Overwriting a key it has is still fine; a value past the byte quota is not.
    set(&http, "small", "a", json!(2));
    let (s, b) = http.call(
        "POST",
        "/fn/small/kv?op=set&key=a",
        None,
        Body::Json(json!("y".repeat(2000))),
    );
    assert_eq!(s, 500, "{b}");
    assert!(
        http.record_message("small", "kv", &b)
            .contains("1000 bytes"),
        "{b}"
    );
    assert_eq!(
        call(&http, "/fn/small/kv?op=get&key=a").1,
        json!({ "value": 2 })
    );
}

fn env_time_and_random(server: &Server) {
    let http = Http::new(server);
    deploy(&http, "ctx", "f", CONTEXT);
    let put = |name: &str, value: &str, secret: bool| {
        let (s, b) = http.call(
            "PUT",
            &format!("/api/v1/tenants/ctx/functions/f/env/{name}"),
            Some(ADMIN),
            Body::Json(json!({ "value": value, "secret": secret })),
        );
        assert_eq!(s, 200, "{b}");
    };
    put("GREETING", "hello", false);
    put("API_KEY", "s3cret", true);
    let now = |b: &Value| b["now"].as_i64().expect("now is an integer");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let (s, first) = call(&http, "/fn/ctx/f");
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["greeting"], "hello");
    assert_eq!(
        first["secret"], "s3cret",
        "secrets are readable by the script"
    );
    assert_eq!(first["missing"], Value::Null);
    assert!(
        (before - 5_000..before + 60_000).contains(&now(&first)),
        "now() is Unix milliseconds: {first}"
    );
    let (_, second) = call(&http, "/fn/ctx/f");
    let draws: Vec<f64> = [&first, &second]
        .iter()
        .flat_map(|b| [b["r1"].as_f64().expect("r1"), b["r2"].as_f64().expect("r2")])
        .collect();
    assert!(draws.iter().all(|r| (0.0..1.0).contains(r)), "{draws:?}");
    for (i, a) in draws.iter().enumerate() {
        for b in &draws[i + 1..] {
            assert_ne!(
                a, b,
                "no two draws repeat, also across invocations: {draws:?}"
            );
        }
    }
    assert!(now(&second) >= now(&first));

    // A change of a variable is live at the next invocation; a removed one is `()`.
    put("GREETING", "bonjour", false);
    assert_eq!(call(&http, "/fn/ctx/f").1["greeting"], "bonjour");
    let (s, _) = http.call(
        "DELETE",
        "/api/v1/tenants/ctx/functions/f/env/GREETING",
        Some(ADMIN),
        Body::None,
    );
    assert_eq!(s, 204);
    assert_eq!(call(&http, "/fn/ctx/f").1["greeting"], Value::Null);
    // Test-invokes get the variables too.
    let (s, b) = http.post(
        "/api/v1/tenants/ctx/functions/f/invoke",
        Some(ADMIN),
        json!({}),
    );
    assert_eq!(s, 200, "{b}");
    let body: Value =
        serde_json::from_str(b["response"]["body"].as_str().unwrap_or("")).expect("json");
    assert_eq!(body["secret"], "s3cret");
}

#[test]
fn env_time_and_random_in_process_mode() {
    env_time_and_random(&Server::start(&data_dir("host-env-process"), None));
}

#[test]
fn env_time_and_random_in_instance_mode() {
    env_time_and_random(&Server::start_on(
        &data_dir("host-env-instance"),
        None,
        &["--isolation", "instance"],
    ));
}
