//! The store conformance suite, run against BOTH back ends: an SQLite file and a real
//! PostgreSQL (`PICLOUD_TEST_DATABASE_URL`, default the local server's `test` database; each
//! test gets a database of its own). A PostgreSQL that cannot be reached fails the test.

use std::path::PathBuf;

use picloud_store::testing::{fresh_pg_database, fresh_sqlite_path};
use picloud_store::{KvQuota, KvUsage, LimitOverrides, PgStore, SqliteStore, Store, StoreError};
use sqlx::Connection;

/// A store on a fresh PostgreSQL database.
async fn fresh_pg() -> PgStore {
    PgStore::connect(&fresh_pg_database().await)
        .await
        .expect("connect and migrate")
}

fn sqlite_path() -> PathBuf {
    fresh_sqlite_path(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sqlite-stores"))
}

async fn fresh_sqlite() -> SqliteStore {
    SqliteStore::open(&sqlite_path())
        .await
        .expect("open and migrate")
}

/// Runs `$name(store)` against each back end.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(&super::fresh_sqlite().await).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(&super::fresh_pg().await).await
            }
        }
    )*};
}

conformance!(
    tenants_are_unique,
    tokens_are_found_by_hash_until_revoked,
    functions_belong_to_their_tenant,
    versions_are_numbered_and_hashed,
    deploy_and_rollback,
    writers_racing_each_other_all_succeed,
    env_secrets_are_write_only,
    kv_is_per_tenant_within_exact_quotas,
    limits_and_ceilings_are_stored_as_chosen,
    routes_are_the_active_versions,
    records_are_written_queried_and_pruned,
    schedules_are_claimed_once_and_leased,
    pinned_versions_outlive_every_prune,
    a_deleted_tenant_takes_everything_with_it,
);

async fn limits_and_ceilings_are_stored_as_chosen(s: &impl Store) {
    let t = s.create_tenant("acme").await.expect("tenant");
    assert_eq!(
        t.ceilings,
        LimitOverrides::default(),
        "nothing chosen at first"
    );
    let ceilings = LimitOverrides {
        timeout_ms: Some(10_000),
        concurrency: Some(4),
        ..LimitOverrides::default()
    };
    let t2 = s.set_tenant_ceilings(t.id, &ceilings).await.expect("set");
    assert_eq!(t2.ceilings, ceilings);
    assert_eq!(s.tenant(t.id).await.expect("get"), Some(t2.clone()));
    assert_eq!(s.tenant_by_name("acme").await.expect("get"), Some(t2));
    assert!(matches!(
        s.set_tenant_ceilings(t.id + 1000, &ceilings).await,
        Err(StoreError::NotFound("tenant"))
    ));

    let f = s.create_function(t.id, "f", true).await.expect("function");
    assert_eq!(f.limits, LimitOverrides::default());
    let limits = LimitOverrides {
        fuel: Some(5_000_000_000),
        memory_bytes: Some(128 << 20),
        ..LimitOverrides::default()
    };
    let f2 = s
        .update_function(f.id, false, &limits)
        .await
        .expect("update");
    assert_eq!((f2.public, f2.limits), (false, limits));
    assert_eq!(s.function(t.id, "f").await.expect("get"), Some(f2));
    // Back to the defaults.
    let f3 = s
        .update_function(f.id, true, &LimitOverrides::default())
        .await
        .expect("update");
    assert_eq!((f3.public, f3.limits), (true, LimitOverrides::default()));
}

async fn routes_are_the_active_versions(s: &impl Store) {
    let t = s.create_tenant("acme").await.expect("tenant");
    let f = s.create_function(t.id, "f", true).await.expect("function");
    s.add_version(f.id, "fn handle(r) { 1 }", "a")
        .await
        .expect("v1");
    assert_eq!(
        s.routes().await.expect("routes"),
        vec![],
        "nothing deployed"
    );
    assert_eq!(s.function_route(f.id).await.expect("route"), None);
    s.deploy(f.id, 1).await.expect("deploy");
    let ceilings = LimitOverrides {
        fuel: Some(2_000_000),
        ..LimitOverrides::default()
    };
    s.set_tenant_ceilings(t.id, &ceilings)
        .await
        .expect("ceilings");
    let route = s
        .function_route(f.id)
        .await
        .expect("route")
        .expect("deployed");
    assert_eq!(
        (
            route.tenant.as_str(),
            route.function.as_str(),
            route.version,
            route.source.as_str()
        ),
        ("acme", "f", 1, "fn handle(r) { 1 }")
    );
    assert_eq!(
        route.limits.fuel, 2_000_000,
        "the tenant's ceiling is applied"
    );
    assert_eq!(s.routes().await.expect("routes"), vec![route.clone()]);
    assert_eq!(s.tenant_routes(t.id).await.expect("routes"), vec![route]);
    // The function's variables, secrets included, travel with its route.
    s.set_env(f.id, "GREETING", "hi", false).await.expect("env");
    s.set_env(f.id, "KEY", "s3cret", true)
        .await
        .expect("secret");
    let route = s
        .function_route(f.id)
        .await
        .expect("route")
        .expect("deployed");
    let expected: std::collections::BTreeMap<String, String> = [
        ("GREETING".into(), "hi".into()),
        ("KEY".into(), "s3cret".into()),
    ]
    .into();
    assert_eq!(route.env, expected);
    assert_eq!(s.routes().await.expect("routes")[0].env, expected);
    assert_eq!(
        s.tenant_routes(t.id).await.expect("routes")[0].env,
        expected
    );
    s.delete_function(t.id, "f").await.expect("delete");
    assert_eq!(s.routes().await.expect("routes"), vec![]);
}

async fn next(watch: &mut picloud_store::RouteWatch) -> picloud_store::RouteEvent {
    tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
        .await
        .expect("announced within 5 s")
}

/// Each committed change is announced to a watcher: by NOTIFY on PostgreSQL, in-process on
/// SQLite.
async fn changes_are_announced(store: picloud_store::AnyStore) {
    use picloud_store::RouteEvent;
    let mut watch = store.watch_routes().await.expect("watch");
    let t = store.create_tenant("acme").await.expect("tenant");
    let f = store
        .create_function(t.id, "f", true)
        .await
        .expect("function");
    store
        .add_version(f.id, "fn handle(r) { 1 }", "a")
        .await
        .expect("v1");
    store.deploy(f.id, 1).await.expect("deploy");
    assert_eq!(next(&mut watch).await, RouteEvent::Function(f.id));
    store
        .update_function(f.id, false, &LimitOverrides::default())
        .await
        .expect("update");
    assert_eq!(next(&mut watch).await, RouteEvent::Function(f.id));
    store
        .set_tenant_ceilings(t.id, &LimitOverrides::default())
        .await
        .expect("ceilings");
    assert_eq!(next(&mut watch).await, RouteEvent::Tenant(t.id));
    store.delete_function(t.id, "f").await.expect("delete");
    assert_eq!(next(&mut watch).await, RouteEvent::Function(f.id));
    // A failed change announces nothing: a deploy of a missing version rolls back.
    let g = store
        .create_function(t.id, "g", true)
        .await
        .expect("function");
    assert!(store.deploy(g.id, 7).await.is_err());
    store
        .add_version(g.id, "fn handle(r) { 2 }", "a")
        .await
        .expect("v1");
    store.deploy(g.id, 1).await.expect("deploy");
    assert_eq!(next(&mut watch).await, RouteEvent::Function(g.id));
}

#[tokio::test]
async fn changes_are_announced_on_sqlite() {
    changes_are_announced(picloud_store::AnyStore::Sqlite(fresh_sqlite().await)).await;
}

#[tokio::test]
async fn changes_are_announced_on_postgres() {
    changes_are_announced(picloud_store::AnyStore::Postgres(fresh_pg().await)).await;
}

async fn records_are_written_queried_and_pruned(s: &impl Store) {
    use picloud_shared::{InvocationResult, LogLevel, LogLine, Outcome};
    use picloud_store::RecordFilter;
    use picloud_store::{InvocationRecord, Trigger};
    let t = s.create_tenant("acme").await.expect("tenant");
    let f = s.create_function(t.id, "f", true).await.expect("function");
    let g = s.create_function(t.id, "g", true).await.expect("function");
    let result = |outcome: Outcome| InvocationResult {
        wait_us: 0,
        outcome,
        response: None,
        duration_us: 1500,
        fuel_used: 42,
        peak_memory_bytes: 1 << 20,
        logs: vec![LogLine {
            level: LogLevel::Info,
            message: "hi".into(),
        }],
        logs_truncated: false,
    };
    let mut batch = Vec::new();
    for i in 0..10 {
        let outcome = if i % 2 == 0 {
            Outcome::Ok
        } else {
            Outcome::Timeout { limit_ms: 5 }
        };
        let mut r = InvocationRecord::new(t.id, f.id, 1, Trigger::Http, &result(outcome));
        r.at = 1_000 + i;
        batch.push(r);
    }
    batch.push(InvocationRecord::new(
        t.id,
        g.id,
        2,
        Trigger::Test,
        &result(Outcome::Ok),
    ));
    s.insert_records(&batch).await.expect("insert");

    let all = RecordFilter {
        limit: 100,
        ..RecordFilter::default()
    };
    let got = s.records(f.id, &all).await.expect("records");
    assert_eq!(got.len(), 10);
    assert!(got.windows(2).all(|w| w[0].at > w[1].at), "newest first");
    // Ids are random, not a count: ten in a row are not consecutive numbers.
    let mut ids: Vec<i64> = got.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert!(
        ids.windows(2).any(|w| w[1] - w[0] > 1_000),
        "ids are not a sequence: {ids:?}"
    );
    assert!(ids.iter().all(|id| (1..1 << 53).contains(id)), "{ids:?}");
    let newest = &got[0];
    assert_eq!(
        (newest.at, newest.outcome.as_str(), newest.status),
        (1_009, "timeout", 504)
    );
    assert_eq!(newest.logs, batch[9].logs);
    assert_eq!(
        (newest.fuel_used, newest.duration_us, newest.trigger),
        (42, 1500, Trigger::Http)
    );
    let timeouts = RecordFilter {
        outcome: Some("timeout".into()),
        ..all.clone()
    };
    assert_eq!(s.records(f.id, &timeouts).await.expect("records").len(), 5);
    let window = RecordFilter {
        since: Some(1_002),
        until: Some(1_005),
        ..all.clone()
    };
    let at: Vec<i64> = s
        .records(f.id, &window)
        .await
        .expect("records")
        .iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(at, vec![1_004, 1_003, 1_002]);
    let page = RecordFilter {
        before_id: Some(got[2].id),
        limit: 3,
        ..RecordFilter::default()
    };
    let ids: Vec<i64> = s
        .records(f.id, &page)
        .await
        .expect("records")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![got[3].id, got[4].id, got[5].id]);
    assert_eq!(
        s.records(g.id, &all).await.expect("records")[0].trigger,
        Trigger::Test
    );
    // The statistics' samples: the window's records, test-invokes left out.
    let samples = s.record_samples(f.id, 1_005).await.expect("samples");
    let mut at: Vec<i64> = samples.iter().map(|r| r.at).collect();
    at.sort_unstable();
    assert_eq!(at, vec![1_005, 1_006, 1_007, 1_008, 1_009]);
    assert!(samples.iter().all(|r| r.duration_us == 1500));
    assert_eq!(samples.iter().filter(|r| r.outcome == "timeout").count(), 3);
    assert!(
        s.record_samples(g.id, 0).await.expect("samples").is_empty(),
        "test-invokes"
    );

    // Prune: by age (f's records are at 1,000–1,009 ms), then by count per function.
    assert_eq!(
        s.prune_records(1_003, 1_000, 100_000).await.expect("prune"),
        3
    );
    assert_eq!(s.records(f.id, &all).await.expect("records").len(), 7);
    assert_eq!(s.prune_records(0, 4, 100_000).await.expect("prune"), 3);
    let left: Vec<i64> = s
        .records(f.id, &all)
        .await
        .expect("records")
        .iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(left, vec![1_009, 1_008, 1_007, 1_006]);
    assert_eq!(s.records(g.id, &all).await.expect("records").len(), 1);
    // Per tenant: its newest two of five, across its functions (g's record is the newest).
    assert_eq!(s.prune_records(0, 1_000, 2).await.expect("prune"), 3);
    let left: Vec<i64> = s
        .records(f.id, &all)
        .await
        .expect("records")
        .iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(left, vec![1_009]);
    assert_eq!(s.records(g.id, &all).await.expect("records").len(), 1);
    // Records go with their function.
    s.delete_function(t.id, "f").await.expect("delete");
    assert!(s.records(f.id, &all).await.expect("records").is_empty());
}

async fn kv_is_per_tenant_within_exact_quotas(s: &impl Store) {
    let a = s.create_tenant("a").await.expect("tenant").id;
    let b = s.create_tenant("b").await.expect("tenant").id;
    let roomy = KvQuota {
        max_keys: 100,
        max_bytes: 1 << 20,
    };
    s.kv_set(a, "user:1", "{\"n\":1}", &roomy)
        .await
        .expect("set");
    s.kv_set(a, "user:2", "2", &roomy).await.expect("set");
    s.kv_set(a, "users", "[]", &roomy).await.expect("set");
    s.kv_set(a, "zz", "true", &roomy).await.expect("set");
    assert_eq!(
        s.kv_get(a, "user:1").await.expect("get").as_deref(),
        Some("{\"n\":1}")
    );
    assert_eq!(
        s.kv_get(b, "user:1").await.expect("get"),
        None,
        "b sees nothing of a"
    );
    assert_eq!(
        s.kv_list(b, "", None, 10).await.expect("list"),
        Vec::<String>::new()
    );
    s.kv_set(b, "user:1", "\"b's\"", &roomy).await.expect("set");
    assert_eq!(
        s.kv_get(a, "user:1").await.expect("get").as_deref(),
        Some("{\"n\":1}"),
        "a's value is untouched by b's write"
    );
    // Prefix and paging, in byte order.
    assert_eq!(
        s.kv_list(a, "user", None, 10).await.expect("list"),
        ["user:1", "user:2", "users"]
    );
    assert_eq!(
        s.kv_list(a, "user", None, 2).await.expect("list"),
        ["user:1", "user:2"]
    );
    assert_eq!(
        s.kv_list(a, "user", Some("user:2"), 2).await.expect("list"),
        ["users"]
    );
    assert_eq!(
        s.kv_list(a, "user:", None, 10).await.expect("list"),
        ["user:1", "user:2"]
    );
    assert_eq!(
        s.kv_list(a, "%", None, 10).await.expect("list"),
        Vec::<String>::new()
    );
    // Overwrite, delete, usage.
    s.kv_set(a, "user:2", "22", &roomy)
        .await
        .expect("overwrite");
    assert_eq!(
        s.kv_get(a, "user:2").await.expect("get").as_deref(),
        Some("22")
    );
    assert!(s.kv_delete(a, "zz").await.expect("delete"));
    assert!(!s.kv_delete(a, "zz").await.expect("delete again"));
    let usage = s.kv_usage(a).await.expect("usage");
    let bytes = ["user:1{\"n\":1}", "user:222", "users[]"]
        .iter()
        .map(|s| s.len() as u64)
        .sum();
    assert_eq!(usage, KvUsage { keys: 3, bytes });

    // Quotas hold exactly, also for writes racing each other: of 20 new keys with room for
    // 5 more, exactly 5 are written.
    let tight = KvQuota {
        max_keys: 8,
        max_bytes: 1 << 20,
    };
    let keys: Vec<String> = (0..20).map(|i| format!("race:{i:02}")).collect();
    let results =
        futures_util::future::join_all(keys.iter().map(|k| s.kv_set(a, k, "1", &tight))).await;
    let written = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(written, 5, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::Quota(m) if m.contains("8 keys")))
    );
    assert_eq!(s.kv_usage(a).await.expect("usage").keys, 8);
    assert_eq!(
        s.kv_list(a, "race:", None, 100).await.expect("list").len(),
        5
    );
    // Overwriting a key at the quota still works; a value past the byte quota does not.
    s.kv_set(a, "user:1", "1", &tight)
        .await
        .expect("overwrite at the quota");
    let small = KvQuota {
        max_keys: 100,
        max_bytes: 100,
    };
    let err = s
        .kv_set(a, "user:1", &"x".repeat(200), &small)
        .await
        .expect_err("past the byte quota");
    assert!(
        matches!(&err, StoreError::Quota(m) if m.contains("100 bytes")),
        "{err}"
    );
    assert_eq!(
        s.kv_get(a, "user:1").await.expect("get").as_deref(),
        Some("1"),
        "nothing written"
    );
    assert_eq!(s.kv_usage(b).await.expect("usage").keys, 1);
}

async fn tenants_are_unique(s: &impl Store) {
    let a = s.create_tenant("acme").await.expect("create");
    assert_eq!(a.name, "acme");
    assert!(matches!(
        s.create_tenant("acme").await,
        Err(StoreError::Conflict("tenant"))
    ));
    s.create_tenant("beta").await.expect("create");
    let names: Vec<String> = s
        .list_tenants()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["acme", "beta"]);
    assert_eq!(s.tenant_by_name("acme").await.expect("get"), Some(a));
    assert_eq!(s.tenant_by_name("nope").await.expect("get"), None);
}

async fn tokens_are_found_by_hash_until_revoked(s: &impl Store) {
    let t = s.create_tenant("acme").await.expect("tenant");
    let admin = s
        .create_token(None, "root", "hash-admin", true)
        .await
        .expect("admin token");
    assert!(admin.admin && admin.tenant_id.is_none());
    let tok = s
        .create_token(Some(t.id), "ci", "hash-1", false)
        .await
        .expect("token");
    assert_eq!(
        s.token_by_hash("hash-1").await.expect("get"),
        Some(tok.clone())
    );
    assert!(matches!(
        s.create_token(Some(t.id), "dup", "hash-1", false).await,
        Err(StoreError::Conflict("token"))
    ));
    assert_eq!(s.list_tokens(Some(t.id)).await.expect("list").len(), 1);
    assert_eq!(s.list_tokens(None).await.expect("list admin").len(), 1);
    // Another tenant cannot revoke it, nor can the admin scope.
    let other = s.create_tenant("other").await.expect("tenant");
    assert!(matches!(
        s.revoke_token(Some(other.id), tok.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.revoke_token(None, tok.id).await,
        Err(StoreError::NotFound(_))
    ));
    s.revoke_token(Some(t.id), tok.id).await.expect("revoke");
    assert_eq!(s.token_by_hash("hash-1").await.expect("get"), None);
    assert!(matches!(
        s.revoke_token(Some(t.id), tok.id).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn functions_belong_to_their_tenant(s: &impl Store) {
    let a = s.create_tenant("a").await.expect("tenant");
    let b = s.create_tenant("b").await.expect("tenant");
    let f = s
        .create_function(a.id, "hello", true)
        .await
        .expect("create");
    assert_eq!(
        (f.name.as_str(), f.public, f.active_version),
        ("hello", true, None)
    );
    assert!(matches!(
        s.create_function(a.id, "hello", false).await,
        Err(StoreError::Conflict("function"))
    ));
    // The same name in another tenant is another function.
    s.create_function(b.id, "hello", false)
        .await
        .expect("b's hello");
    assert_eq!(
        s.function(a.id, "hello").await.expect("get"),
        Some(f.clone())
    );
    assert_eq!(s.list_functions(a.id).await.expect("list").len(), 1);
    assert!(matches!(
        s.delete_function(b.id, "nope").await,
        Err(StoreError::NotFound("function"))
    ));
    s.delete_function(a.id, "hello").await.expect("delete");
    assert_eq!(s.function(a.id, "hello").await.expect("get"), None);
    assert!(
        s.function(b.id, "hello").await.expect("get").is_some(),
        "b's function is untouched"
    );
}

async fn versions_are_numbered_and_hashed(s: &impl Store) {
    let t = s.create_tenant("t").await.expect("tenant");
    let f = s.create_function(t.id, "f", true).await.expect("function");
    let v1 = s
        .add_version(f.id, "fn handle(req) { 1 }", "alice")
        .await
        .expect("v1");
    let v2 = s
        .add_version(f.id, "fn handle(req) { 2 }", "bob")
        .await
        .expect("v2");
    assert_eq!((v1.version, v2.version), (1, 2));
    // sha256("fn handle(req) { 1 }"), computed independently.
    assert_eq!(v1.sha256.len(), 64);
    assert_ne!(v1.sha256, v2.sha256);
    assert_eq!(
        s.version_source(f.id, 1).await.expect("source").as_deref(),
        Some("fn handle(req) { 1 }")
    );
    assert_eq!(s.version_source(f.id, 3).await.expect("source"), None);
    let listed = s.versions(f.id).await.expect("versions");
    assert_eq!(listed, vec![v1, v2]);
}

async fn deploy_and_rollback(s: &impl Store) {
    let t = s.create_tenant("t").await.expect("tenant");
    let f = s.create_function(t.id, "f", true).await.expect("function");
    s.add_version(f.id, "fn handle(req) { 1 }", "a")
        .await
        .expect("v1");
    s.add_version(f.id, "fn handle(req) { 2 }", "a")
        .await
        .expect("v2");
    assert_eq!(
        s.deploy(f.id, 2).await.expect("deploy").active_version,
        Some(2)
    );
    assert_eq!(
        s.deploy(f.id, 1).await.expect("rollback").active_version,
        Some(1)
    );
    // A version that does not exist changes nothing.
    assert!(matches!(
        s.deploy(f.id, 9).await,
        Err(StoreError::NotFound("version"))
    ));
    assert_eq!(
        s.function(t.id, "f")
            .await
            .expect("get")
            .and_then(|f| f.active_version),
        Some(1)
    );
}

/// Deploys (which read, then write) racing record batches and key-value writes: on SQLite a
/// deferred transaction that reads first is refused its upgrade to a writer ("database is
/// locked") when another connection committed meanwhile, so every write transaction must take
/// the write lock up front and wait its turn.
async fn writers_racing_each_other_all_succeed(s: &impl Store) {
    use futures_util::future::join_all;
    use picloud_store::{InvocationRecord, Trigger};
    let t = s.create_tenant("t").await.expect("tenant");
    let f = s.create_function(t.id, "f", true).await.expect("function");
    for _ in 0..2 {
        s.add_version(f.id, "fn handle(req) { 1 }", "a")
            .await
            .expect("version");
    }
    let result = ok_result();
    // A record each, as real writers race: two writers never hold the same record at once (a
    // record is written again only by its own server's spool replay, one batch after another).
    let batches: Vec<InvocationRecord> = (0..40)
        .map(|_| InvocationRecord::new(t.id, f.id, 1, Trigger::Http, &result))
        .collect();
    let quota = KvQuota {
        max_keys: 1000,
        max_bytes: 1 << 20,
    };
    let deploys = join_all((0..40).map(|i| s.deploy(f.id, 1 + i % 2)));
    let records = join_all(
        batches
            .iter()
            .map(|record| s.insert_records(std::slice::from_ref(record))),
    );
    let kv = join_all((0..40).map(|i| {
        let key = format!("k{i}");
        async move { s.kv_set(t.id, &key, "1", &quota).await }
    }));
    let (deploys, records, kv) = tokio::join!(deploys, records, kv);
    for d in deploys {
        d.expect("every deploy succeeds");
    }
    for r in records {
        r.expect("every record batch is written");
    }
    for k in kv {
        k.expect("every key is written");
    }
}

async fn env_secrets_are_write_only(s: &impl Store) {
    let t = s.create_tenant("t").await.expect("tenant");
    let f = s.create_function(t.id, "f", true).await.expect("function");
    s.set_env(f.id, "REGION", "eu", false).await.expect("set");
    s.set_env(f.id, "API_KEY", "s3cr3t", true)
        .await
        .expect("set secret");
    s.set_env(f.id, "REGION", "us", false)
        .await
        .expect("overwrite");
    let listed = s.list_env(f.id).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (
            listed[0].name.as_str(),
            listed[0].value.as_deref(),
            listed[0].secret
        ),
        ("API_KEY", None, true)
    );
    assert_eq!(
        (listed[1].name.as_str(), listed[1].value.as_deref()),
        ("REGION", Some("us"))
    );
    assert_eq!(
        s.env_values(f.id).await.expect("values"),
        vec![
            ("API_KEY".to_string(), "s3cr3t".to_string()),
            ("REGION".into(), "us".into())
        ]
    );
    s.unset_env(f.id, "REGION").await.expect("unset");
    assert!(matches!(
        s.unset_env(f.id, "REGION").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn sqlite_data_survives_reopening_and_an_edited_migration_stops_start_up() {
    use picloud_store::{FunctionStore, TenantStore};
    let path = sqlite_path();
    {
        let s = SqliteStore::open(&path).await.expect("open");
        let t = s.create_tenant("keep").await.expect("tenant");
        let f = s.create_function(t.id, "f", true).await.expect("function");
        s.add_version(f.id, "fn handle(req) { 1 }", "a")
            .await
            .expect("version");
    }
    let s = SqliteStore::open(&path).await.expect("reopen");
    let t = s
        .tenant_by_name("keep")
        .await
        .expect("get")
        .expect("still there");
    let f = s
        .function(t.id, "f")
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(s.versions(f.id).await.expect("versions").len(), 1);
    drop(s);

    // Simulate an edited migration: the recorded checksum no longer matches the file.
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    sqlx::query("UPDATE _sqlx_migrations SET checksum = x'00'")
        .execute(&mut conn)
        .await
        .expect("tamper");
    drop(conn);
    let err = SqliteStore::open(&path)
        .await
        .expect_err("an edited migration stops start-up");
    assert!(err.to_string().contains("migration"), "{err}");
    assert!(err.to_string().contains("modified"), "{err}");
}

#[tokio::test]
async fn postgres_edited_migration_stops_start_up() {
    let url = fresh_pg_database().await;
    let store = PgStore::connect(&url).await.expect("connect and migrate");
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea")
        .execute(store.pool())
        .await
        .expect("tamper");
    let err = PgStore::connect(&url)
        .await
        .expect_err("an edited migration stops start-up");
    assert!(err.to_string().contains("modified"), "{err}");
}

/// Schedules: stored as given, paused and resumed, and each due tick claimed by exactly one of
/// many racing claims; a claim's lease blocks the next until released or lapsed, and a lapsed
/// claim's unfinished tick is marked abandoned.
async fn schedules_are_claimed_once_and_leased(s: &impl Store) {
    use futures_util::future::join_all;
    use picloud_store::ScheduleClaim;
    let t = s.create_tenant("t").await.expect("tenant");
    let f = s.create_function(t.id, "f", true).await.expect("function");
    let sc = s
        .create_schedule(f.id, "* * * * * *", "UTC", true, Some(r#"{"a":1}"#), 10_000)
        .await
        .expect("schedule");
    assert_eq!(
        (
            sc.cron.as_str(),
            sc.time_zone.as_str(),
            sc.enabled,
            sc.payload.as_deref()
        ),
        ("* * * * * *", "UTC", true, Some(r#"{"a":1}"#))
    );
    assert_eq!(
        (sc.next_run_at, sc.running_until, sc.skipped_ticks),
        (10_000, None, 0)
    );
    assert_eq!(s.schedules(f.id).await.expect("list"), vec![sc.clone()]);
    assert_eq!(
        s.enabled_schedules().await.expect("enabled"),
        vec![sc.clone()]
    );

    // Eight schedulers race for the tick at 10 s: one wins.
    let owners: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    let runs = [(10_000, false)];
    let claims: Vec<ScheduleClaim<'_>> = owners
        .iter()
        .map(|owner| ScheduleClaim {
            schedule_id: sc.id,
            expected_next: 10_000,
            following: 11_000,
            lease_until: 20_000,
            runs: &runs,
            skipped: 0,
            owner,
            now: 10_001,
        })
        .collect();
    let results = join_all(claims.iter().map(|c| s.claim_ticks(c))).await;
    let won: Vec<u64> = results
        .into_iter()
        .filter_map(|r| r.expect("a claim answers"))
        .collect();
    assert_eq!(won, vec![0], "exactly one claim wins");
    let claimed = s.schedule(sc.id).await.expect("get").expect("exists");
    assert_eq!(
        (claimed.next_run_at, claimed.running_until),
        (11_000, Some(20_000))
    );

    // While the lease holds, the next tick cannot be claimed, even by the right expectation.
    let next = [(11_000, false)];
    let mut claim = ScheduleClaim {
        schedule_id: sc.id,
        expected_next: 11_000,
        following: 12_000,
        lease_until: 30_000,
        runs: &next,
        skipped: 0,
        owner: "late",
        now: 11_500,
    };
    assert_eq!(s.claim_ticks(&claim).await.expect("claim"), None);

    // Released after its run: the next claim goes through.
    s.finish_run(sc.id, 10_000, "ok", 10_050)
        .await
        .expect("finish");
    s.release_schedule(sc.id, 20_000).await.expect("release");
    assert_eq!(s.claim_ticks(&claim).await.expect("claim"), Some(0));

    // That run is never finished (its scheduler died): once the lease lapses, the next claim
    // marks it abandoned and counts the ticks it gives up.
    let backfill = [(40_000, true)];
    claim = ScheduleClaim {
        schedule_id: sc.id,
        expected_next: 12_000,
        following: 41_000,
        lease_until: 50_000,
        runs: &backfill,
        skipped: 28,
        owner: "rescuer",
        now: 40_100,
    };
    assert_eq!(s.claim_ticks(&claim).await.expect("claim"), Some(1));
    let runs = s.schedule_runs(sc.id, 10).await.expect("runs");
    let summary: Vec<(i64, bool, &str, Option<&str>)> = runs
        .iter()
        .map(|r| (r.due_at, r.backfill, r.owner.as_str(), r.outcome.as_deref()))
        .collect();
    assert_eq!(
        summary[0..2],
        [
            (40_000, true, "rescuer", None),
            (11_000, false, "late", Some("abandoned"))
        ]
    );
    assert_eq!(summary[2].0, 10_000);
    assert_eq!(summary[2].3, Some("ok"));
    assert_eq!(
        s.schedule(sc.id)
            .await
            .expect("get")
            .map(|x| x.skipped_ticks),
        Some(28)
    );

    // Paused: no claim succeeds; resumed with a fresh next tick.
    let paused = s
        .set_schedule_enabled(f.id, sc.id, false, 0)
        .await
        .expect("pause");
    assert!(!paused.enabled);
    assert_eq!(paused.next_run_at, 41_000, "pausing keeps the next tick");
    assert!(s.enabled_schedules().await.expect("enabled").is_empty());
    s.release_schedule(sc.id, 50_000).await.expect("release");
    claim.expected_next = 41_000;
    claim.now = 41_001;
    assert_eq!(s.claim_ticks(&claim).await.expect("claim"), None, "paused");
    let resumed = s
        .set_schedule_enabled(f.id, sc.id, true, 90_000)
        .await
        .expect("resume");
    assert_eq!((resumed.enabled, resumed.next_run_at), (true, 90_000));

    // Another function's id reaches nothing; deleting the function deletes its schedules.
    let g = s.create_function(t.id, "g", true).await.expect("function");
    assert!(matches!(
        s.set_schedule_enabled(g.id, sc.id, false, 0).await,
        Err(StoreError::NotFound("schedule"))
    ));
    assert!(matches!(
        s.delete_schedule(g.id, sc.id).await,
        Err(StoreError::NotFound("schedule"))
    ));
    s.delete_function(t.id, "f").await.expect("delete");
    assert_eq!(s.schedule(sc.id).await.expect("get"), None);
    assert!(s.schedule_runs(sc.id, 10).await.expect("runs").is_empty());
}

/// Migration 10: schedules stored under the old day-of-week reading get the `next_run_at` of
/// cron(5)'s when a server starts, once; those whose days did not change keep theirs.
mod weekdays_are_rechecked_at_start {
    use super::*;
    use chrono::{Datelike, TimeZone, Weekday};

    const FUTURE: i64 = 1_893_920_400_000; // 2030-01-06 09:00 UTC, a Sunday

    async fn stored(s: &impl Store) -> [i64; 3] {
        let t = s.create_tenant("t").await.expect("tenant");
        let f = s.create_function(t.id, "f", true).await.expect("function");
        let mut ids = [0; 3];
        for (i, cron) in ["0 9 * * 1-5", "0 9 * * *", "0 9 * * mon-fri"]
            .into_iter()
            .enumerate()
        {
            ids[i] = s
                .create_schedule(f.id, cron, "UTC", true, None, FUTURE)
                .await
                .expect("schedule")
                .id;
        }
        ids
    }

    async fn check(s: &impl Store, ids: [i64; 3]) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        let weekdays = s.schedule(ids[0]).await.expect("read").expect("there");
        let at = chrono::Utc
            .timestamp_millis_opt(weekdays.next_run_at)
            .single()
            .expect("a time");
        assert!(weekdays.next_run_at >= now - 1_000, "{at}");
        assert!(
            !matches!(at.weekday(), Weekday::Sat | Weekday::Sun),
            "1-5 is Monday to Friday: {at}"
        );
        for id in &ids[1..] {
            let kept = s.schedule(*id).await.expect("read").expect("there");
            assert_eq!(kept.next_run_at, FUTURE, "{}", kept.cron);
        }
    }

    #[tokio::test]
    async fn sqlite() {
        use picloud_store::ScheduleStore;
        let path = sqlite_path();
        let ids = {
            let s = SqliteStore::open(&path).await.expect("open");
            let ids = stored(&s).await;
            // As migration 10 leaves a schedule stored before it.
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("pool");
            sqlx::query("UPDATE schedules SET weekdays_recheck = TRUE")
                .execute(&pool)
                .await
                .expect("mark");
            ids
        };
        let s = SqliteStore::open(&path).await.expect("reopen");
        check(&s, ids).await;
        // Once: a schedule edited after the start keeps its edit through the next.
        let again = SqliteStore::open(&path).await.expect("reopen again");
        assert_eq!(
            again
                .schedule(ids[0])
                .await
                .expect("read")
                .expect("there")
                .next_run_at,
            s.schedule(ids[0])
                .await
                .expect("read")
                .expect("there")
                .next_run_at
        );
    }

    #[tokio::test]
    async fn postgres() {
        let url = fresh_pg_database().await;
        let s = PgStore::connect(&url).await.expect("connect");
        let ids = stored(&s).await;
        sqlx::query("UPDATE schedules SET weekdays_recheck = TRUE")
            .execute(s.pool())
            .await
            .expect("mark");
        let s = PgStore::connect(&url).await.expect("reconnect");
        check(&s, ids).await;
    }
}

/// Pins keep a version through a prune asked for and through the automatic one at the cap;
/// the live version and the newest `keep` are kept too.
async fn pinned_versions_outlive_every_prune(s: &impl Store) {
    use picloud_store::VersionQuota;
    let t = s.create_tenant("t").await.expect("tenant");
    let f = s.create_function(t.id, "f", true).await.expect("function");
    for n in 1..=6 {
        s.add_version(f.id, &format!("fn handle(req) {{ {n} }}"), "a")
            .await
            .expect("version");
    }
    s.deploy(f.id, 3).await.expect("deploy");
    let pinned = s.set_version_pinned(f.id, 2, true).await.expect("pin");
    assert!(pinned.pinned && pinned.version == 2);
    assert!(matches!(
        s.set_version_pinned(f.id, 9, true).await,
        Err(StoreError::NotFound("version"))
    ));
    assert_eq!(
        s.prune_versions(f.id, 1).await.expect("prune"),
        vec![1, 4, 5]
    );
    let left: Vec<(i32, bool)> = s
        .versions(f.id)
        .await
        .expect("versions")
        .into_iter()
        .map(|v| (v.version, v.pinned))
        .collect();
    assert_eq!(left, vec![(2, true), (3, false), (6, false)]);
    assert!(s.prune_versions(f.id, 1).await.expect("prune").is_empty());
    // At the cap (3 versions: the pinned 2, the live 3, the newest 6), nothing is prunable:
    // the save is refused, naming pins; once 2 is unpinned, the save prunes it.
    let quota = VersionQuota {
        max_per_function: 3,
        max_tenant_bytes: 1 << 20,
        keep_newest: 1,
    };
    let refused = s
        .add_version_within(t.id, f.id, "fn handle(req) { 7 }", "a", &quota)
        .await;
    match refused {
        Err(StoreError::Quota(message)) => assert!(message.contains("pinned"), "{message}"),
        other => panic!("expected a quota refusal, got {other:?}"),
    }
    s.set_version_pinned(f.id, 2, false).await.expect("unpin");
    let saved = s
        .add_version_within(t.id, f.id, "fn handle(req) { 7 }", "a", &quota)
        .await
        .expect("save once unpinned");
    assert_eq!(saved.pruned, vec![2]);
}

/// A tenant's deletion takes its functions, versions, tokens, records and keys, and nothing
/// of another tenant's; a record keeps the request it answered.
async fn a_deleted_tenant_takes_everything_with_it(s: &impl Store) {
    use picloud_shared::InvocationRequest;
    use picloud_store::RecordFilter;
    use picloud_store::{InvocationRecord, Trigger};
    let quota = KvQuota {
        max_keys: 10,
        max_bytes: 1 << 20,
    };
    let mut ids = Vec::new();
    for name in ["gone", "stays"] {
        let t = s.create_tenant(name).await.expect("tenant");
        let f = s.create_function(t.id, "f", true).await.expect("function");
        s.add_version(f.id, "fn handle(req) { 1 }", "a")
            .await
            .expect("version");
        s.create_token(Some(t.id), "main", &format!("hash-{name}"), false)
            .await
            .expect("token");
        s.kv_set(t.id, "k", "1", &quota).await.expect("kv");
        let result = ok_result();
        let mut request = InvocationRequest::get("/orders/7");
        request.headers.insert("accept".into(), "text/plain".into());
        request.body = "nul \0 inside".into();
        let records: Vec<InvocationRecord> = (0..3)
            .map(|_| {
                InvocationRecord::new(t.id, f.id, 1, Trigger::Http, &result).answering(&request)
            })
            .chain(std::iter::once(
                InvocationRecord::new(t.id, f.id, 1, Trigger::Schedule, &result).scheduled_by(42),
            ))
            .collect();
        s.insert_records(&records).await.expect("records");
        ids.push((t.id, f.id));
    }
    let filter = RecordFilter {
        outcome: None,
        since: None,
        until: None,
        before_id: None,
        limit: 10,
    };
    let kept = s.records(ids[1].1, &filter).await.expect("records");
    assert_eq!(kept.len(), 4);
    let http = kept
        .iter()
        .find(|r| r.trigger == Trigger::Http)
        .expect("http");
    assert_eq!(
        (
            http.method.as_deref(),
            http.path.as_deref(),
            http.schedule_id
        ),
        (Some("GET"), Some("/orders/7"), None)
    );
    let kept_request = http.request.as_ref().expect("the request");
    assert_eq!(kept_request.headers["accept"], "text/plain");
    assert_eq!(
        kept_request.body, "nul \0 inside",
        "a NUL round-trips in JSON text"
    );
    let tick = kept
        .iter()
        .find(|r| r.trigger == Trigger::Schedule)
        .expect("tick");
    assert_eq!((tick.method.as_deref(), tick.schedule_id), (None, Some(42)));

    s.delete_tenant(ids[0].0).await.expect("delete");
    assert!(matches!(
        s.delete_tenant(ids[0].0).await,
        Err(StoreError::NotFound("tenant"))
    ));
    assert!(s.tenant_by_name("gone").await.expect("read").is_none());
    assert!(s.token_by_hash("hash-gone").await.expect("read").is_none());
    assert!(s.token_by_hash("hash-stays").await.expect("read").is_some());
    assert!(s.versions(ids[0].1).await.expect("versions").is_empty());
    assert!(
        s.records(ids[0].1, &filter)
            .await
            .expect("records")
            .is_empty()
    );
    assert_eq!(s.kv_get(ids[0].0, "k").await.expect("kv"), None);
    assert_eq!(
        s.kv_get(ids[1].0, "k").await.expect("kv").as_deref(),
        Some("1")
    );
    assert_eq!(
        s.records(ids[1].1, &filter).await.expect("records").len(),
        4
    );
}

/// A result of `ok` with the least of everything.
fn ok_result() -> picloud_shared::InvocationResult {
    picloud_shared::InvocationResult {
        wait_us: 0,
        outcome: picloud_shared::Outcome::Ok,
        response: None,
        duration_us: 1,
        fuel_used: 1,
        peak_memory_bytes: 1,
        logs: Vec::new(),
        logs_truncated: false,
    }
}
