//! The orchestrator's routing table: endpoints are served from memory (a locked database does
//! not stop them), and a change made through one server reaches another on the same PostgreSQL
//! through LISTEN/NOTIFY — also after its connections were terminated.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN, Http, Server, block_on, data_dir, fresh_pg, terminate_connections};
use serde_json::{Value, json};
use sqlx::Connection;

fn deploy(http: &Http, name: &str, body: &str) {
    let source = format!("fn handle(req) {{ \"{body}\" }}");
    let path = format!("/api/v1/tenants/acme/functions/{name}");
    let (s, _) = http.get(&path, Some(ADMIN));
    let (s, b) = if s == 404 {
        http.post(
            "/api/v1/tenants/acme/functions",
            Some(ADMIN),
            json!({ "name": name, "source": source, "deploy": true }),
        )
    } else {
        http.post(
            &format!("{path}/versions"),
            Some(ADMIN),
            json!({ "source": source, "deploy": true }),
        )
    };
    assert_eq!(s, 201, "{b}");
}

/// Polls `path` on `http` until it answers `want`; returns how long that took.
fn until_answers(http: &Http, path: &str, want: &Value, within: Duration) -> Duration {
    until_answers_to(http, None, path, want, within)
}

/// As [`until_answers`], with `token` if given.
fn until_answers_to(
    http: &Http,
    token: Option<&str>,
    path: &str,
    want: &Value,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let (_, body) = http.get(path, token);
        if &body == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{path} still answers {body}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn endpoints_are_served_from_memory_while_the_database_is_locked() {
    let url = fresh_pg();
    let server = Server::start(&data_dir("locked"), Some(&url));
    let http = Http::new(&server);
    assert_eq!(
        http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "acme" }))
            .0,
        201
    );
    deploy(&http, "hello", "from memory");
    assert_eq!(
        http.get("/fn/acme/hello", None),
        (200, json!("from memory"))
    );

    block_on(async {
        // Hold every table the endpoint could read under an exclusive lock.
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        let mut tx = conn.begin().await.expect("begin");
        sqlx::query(
            "LOCK TABLE tenants, functions, function_versions, tokens IN ACCESS EXCLUSIVE MODE",
        )
        .execute(&mut *tx)
        .await
        .expect("lock");
        let addr = server.addr.clone();
        let served = tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into();
            (0..20)
                .map(|_| {
                    agent
                        .get(&format!("http://{addr}/fn/acme/hello"))
                        .call()
                        .map(|mut r| r.body_mut().read_to_string().unwrap_or_default())
                        .map_err(|e| e.to_string())
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("requests");
        tx.rollback().await.expect("unlock");
        for answer in served {
            assert_eq!(answer.as_deref(), Ok("from memory"));
        }
    });
}

#[test]
fn a_deploy_through_one_server_is_live_on_another_within_a_second() {
    let url = fresh_pg();
    let a = Server::start(&data_dir("node-a"), Some(&url));
    let b = Server::start(&data_dir("node-b"), Some(&url));
    let (ha, hb) = (Http::new(&a), Http::new(&b));
    assert_eq!(
        ha.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "acme" }))
            .0,
        201
    );

    deploy(&ha, "hello", "one");
    until_answers(&hb, "/fn/acme/hello", &json!("one"), Duration::from_secs(1));
    deploy(&ha, "hello", "two");
    let took = until_answers(&hb, "/fn/acme/hello", &json!("two"), Duration::from_secs(1));
    eprintln!("deploy on A live on B after {took:?}");

    // Rollback, privacy and deletion travel the same way.
    let (s, _) = ha.post(
        "/api/v1/tenants/acme/functions/hello/rollback",
        Some(ADMIN),
        json!({}),
    );
    assert_eq!(s, 200);
    until_answers(&hb, "/fn/acme/hello", &json!("one"), Duration::from_secs(1));
    ha.call(
        "PATCH",
        "/api/v1/tenants/acme/functions/hello",
        Some(ADMIN),
        common::Body::Json(json!({ "public": false })),
    );
    // Private: an anonymous caller gets what a missing function gets; its tenant's token the
    // function.
    let missing = json!({ "error": { "kind": "not_found", "message": "no such function" } });
    until_answers(&hb, "/fn/acme/hello", &missing, Duration::from_secs(1));
    assert_eq!(hb.get("/fn/acme/hello", Some(ADMIN)), (200, json!("one")));
    ha.call(
        "DELETE",
        "/api/v1/tenants/acme/functions/hello",
        Some(ADMIN),
        common::Body::None,
    );
    // Deleted: missing even to the admin.
    until_answers_to(
        &hb,
        Some(ADMIN),
        "/fn/acme/hello",
        &missing,
        Duration::from_secs(1),
    );

    // B loses every connection (its listener too); what A deploys meanwhile still reaches B,
    // by the full reload after B reconnects.
    for round in 0..3 {
        let killed = terminate_connections(&url);
        assert!(killed > 0);
        let body = format!("after reconnect {round}");
        deploy(&ha, "later", &body);
        until_answers(&hb, "/fn/acme/later", &json!(body), Duration::from_secs(5));
    }
}
