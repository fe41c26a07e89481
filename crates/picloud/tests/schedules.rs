//! Schedules against real `picloud serve` processes: every tick runs once across two servers on
//! one PostgreSQL, through a SIGKILL of one of them and a stop of both (the backfill policy);
//! the same on SQLite with one server; a server killed in the middle of a run; the API's
//! refusals, pause and resume, records and metrics.
//!
//! Each run writes one key into the tenant's key-value store, so the tests count what actually
//! ran from the database, not from what the servers say.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    ADMIN, Body, Http, Server, block_on, data_dir, fresh_pg, pg_keys, promtool_accepts,
    runs_by_tick,
};
use serde_json::{Value, json};
use sqlx::Connection;

const FUNCTIONS: &str = "/api/v1/tenants/acme/functions";

/// Every run leaves a key `run-<tick>-<random>`, so a tick run twice leaves two.
const TICK: &str = r#"
fn handle(req) { "I run on a schedule" }

fn on_schedule(event) {
	kv_set(`run-${event.scheduled_at}-${random()}`, event.backfill);
	print(`tick ${event.scheduled_at} backfill=${event.backfill} payload=${event.payload.greeting}`);
	event.scheduled_at
}
"#;

/// Starts, then computes until Rhai's operations limit stops it (about a second): long enough
/// to be killed in the middle.
const SLOW: &str = r#"
fn handle(req) { "slow" }

fn on_schedule(event) {
	kv_set(`run-${event.scheduled_at}-${random()}`, event.backfill);
	let t = now();
	while now() - t < 2500 {}
}
"#;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn sleep_until(ms: i64) {
    let left = ms - now_ms();
    if left > 0 {
        std::thread::sleep(Duration::from_millis(left as u64));
    }
}

/// Creates tenant `acme` and function `name` running `source`; returns the schedules path.
fn function(http: &Http, name: &str, source: &str) -> String {
    let (s, b) = http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "acme" }));
    assert!(s == 201 || s == 409, "{s} {b}");
    let (s, b) = http.post(
        FUNCTIONS,
        Some(ADMIN),
        json!({ "name": name, "source": source, "deploy": true }),
    );
    assert_eq!(s, 201, "{b}");
    format!("{FUNCTIONS}/{name}/schedules")
}

/// Lets tenant `acme` have schedules that fire more than once a minute (the admin's choice).
fn allow_sub_minute(http: &Http) {
    let (s, b) = http.call(
        "PATCH",
        "/api/v1/tenants/acme",
        Some(ADMIN),
        Body::Json(json!({ "sub_minute_schedules": true })),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["sub_minute_schedules"], true, "{b}");
}

/// Adds an every-second schedule; returns its id and first tick.
fn every_second(http: &Http, schedules: &str) -> (i64, i64) {
    allow_sub_minute(http);
    let (s, b) = http.post(
        schedules,
        Some(ADMIN),
        json!({ "cron": "* * * * * *", "payload": { "greeting": "hi" } }),
    );
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["time_zone"], "UTC", "{b}");
    let first = b["next_run_at"].as_i64().expect("next run");
    assert_eq!(first % 1000, 0, "ticks fall on whole seconds: {b}");
    (b["id"].as_i64().expect("id"), first)
}

/// The schedule's claimed ticks, oldest first.
fn runs(http: &Http, schedules: &str, id: i64) -> Vec<Value> {
    let (s, b) = http.get(&format!("{schedules}/{id}/runs?limit=1000"), Some(ADMIN));
    assert_eq!(s, 200, "{b}");
    let mut runs = b.as_array().expect("a list").clone();
    runs.sort_by_key(|r| r["due_at"].as_i64());
    runs
}

/// Waits until tick `due` has been claimed and has finished.
fn wait_finished(http: &Http, schedules: &str, id: i64, due: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = runs(http, schedules, id);
        if let Some(run) = runs.iter().find(|r| r["due_at"].as_i64() == Some(due))
            && !run["outcome"].is_null()
        {
            return run.clone();
        }
        assert!(
            Instant::now() < deadline,
            "tick {due} did not finish: {runs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The schedule's claimed ticks read from PostgreSQL (no server needs to be up), oldest first,
/// shaped as the API lists them.
fn pg_runs(url: &str, id: i64) -> Vec<Value> {
    let rows: Vec<(i64, bool, Option<String>)> = block_on(async {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query_as(
            "SELECT due_at, backfill, outcome FROM schedule_runs WHERE schedule_id = $1 ORDER BY due_at",
        )
        .bind(id)
        .fetch_all(&mut conn)
        .await
        .expect("runs")
    });
    rows.into_iter()
        .map(|(due_at, backfill, outcome)| json!({ "due_at": due_at, "backfill": backfill, "outcome": outcome }))
        .collect()
}

fn sqlite_keys(server: &Server) -> BTreeMap<i64, usize> {
    let url = format!(
        "sqlite://{}?mode=ro",
        server.data_dir.join("picloud.db").display()
    );
    runs_by_tick(block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query_scalar("SELECT key FROM kv WHERE key LIKE 'run-%'")
            .fetch_all(&mut conn)
            .await
            .expect("keys")
    }))
}

/// Checks that the ticks `first..=last` were each claimed once, ran once with `ok`, on time.
fn assert_each_tick_once(runs: &[Value], keys: &BTreeMap<i64, usize>, first: i64, last: i64) {
    let window: Vec<&Value> = runs
        .iter()
        .filter(|r| (first..=last).contains(&r["due_at"].as_i64().unwrap_or(0)))
        .collect();
    let ticks: Vec<i64> = window
        .iter()
        .map(|r| r["due_at"].as_i64().unwrap_or(0))
        .collect();
    let want: Vec<i64> = (first..=last).step_by(1000).collect();
    assert_eq!(ticks, want, "every tick claimed, once, none skipped");
    for r in &window {
        assert_eq!(r["outcome"], "ok", "{r}");
        assert_eq!(r["backfill"], false, "{r}");
    }
    for tick in want {
        assert_eq!(keys.get(&tick), Some(&1), "tick {tick} ran once: {keys:?}");
    }
}

/// After a stop, the most recent missed tick runs as a backfill and the rest are counted.
/// Returns the backfilled tick.
fn assert_backfilled_once(
    http: &Http,
    schedules: &str,
    id: i64,
    last_before_stop: i64,
    downtime_ms: i64,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let after: Vec<Value> = runs(http, schedules, id)
            .into_iter()
            .filter(|r| r["due_at"].as_i64().unwrap_or(0) > last_before_stop)
            .collect();
        if after.len() >= 3 && after.iter().all(|r| !r["outcome"].is_null()) {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "no runs after the restart: {after:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let backfill = after[0]["due_at"].as_i64().expect("tick");
    assert_eq!(after[0]["backfill"], true, "{after:?}");
    assert_eq!(after[0]["outcome"], "ok", "{after:?}");
    assert!(
        backfill - last_before_stop >= downtime_ms,
        "the backfilled tick is the most recent one: {after:?}"
    );
    for (i, r) in after.iter().enumerate().skip(1) {
        assert_eq!(r["backfill"], false, "{r}");
        assert_eq!(
            r["due_at"].as_i64(),
            Some(backfill + 1000 * i as i64),
            "{after:?}"
        );
    }
    let (s, sched) = http.get(&format!("{schedules}/{id}"), Some(ADMIN));
    assert_eq!(s, 200, "{sched}");
    assert_eq!(
        sched["skipped_ticks"].as_i64(),
        Some((backfill - last_before_stop) / 1000 - 1),
        "every missed tick but the backfilled one is counted: {sched}"
    );
    backfill
}

fn pause(http: &Http, schedules: &str, id: i64) {
    let (s, b) = http.call(
        "PATCH",
        &format!("{schedules}/{id}"),
        Some(ADMIN),
        Body::Json(json!({ "enabled": false })),
    );
    assert_eq!((s, b["enabled"].as_bool()), (200, Some(false)), "{b}");
}

#[test]
fn two_servers_on_postgres_run_each_tick_once_through_a_kill_and_a_stop() {
    let url = fresh_pg();
    let mut a = Server::start(&data_dir("sched-pg-a"), Some(&url));
    let mut b = Server::start(&data_dir("sched-pg-b"), Some(&url));
    let (http_a, http_b) = (Http::new(&a), Http::new(&b));
    let schedules = function(&http_a, "tick", TICK);
    let (id, first) = every_second(&http_a, &schedules);

    // Half-way, SIGKILL server A between two runs (a kill in the middle of a run has its own
    // test below: that tick is abandoned, not run twice).
    let half = first + 30_000;
    sleep_until(half + 200);
    wait_finished(&http_b, &schedules, id, half);
    a.child.kill().expect("SIGKILL");
    a.child.wait().expect("reaped");

    // B alone carries on to the end of the minute.
    let last = first + 59_000;
    sleep_until(last + 200);
    wait_finished(&http_b, &schedules, id, last);
    b.stop();
    let before = pg_runs(&url, id);
    let stopped_at = before
        .last()
        .and_then(|r| r["due_at"].as_i64())
        .expect("runs");
    assert_each_tick_once(&before, &pg_keys(&url), first, stopped_at);
    assert!(stopped_at >= last);

    // Both down for 10 s, then one back: the default policy runs only the most recent missed
    // tick.
    std::thread::sleep(Duration::from_secs(10));
    let a = Server::start(&a.data_dir.clone(), Some(&url));
    let http_a = Http::new(&a);
    let backfill = assert_backfilled_once(&http_a, &schedules, id, stopped_at, 10_000);
    let keys = pg_keys(&url);
    assert_eq!(keys.get(&backfill), Some(&1));
    assert!(
        keys.keys().all(|t| *t <= stopped_at || *t >= backfill),
        "nothing ran for the skipped ticks: {keys:?}"
    );
    assert!(
        keys.values().all(|n| *n == 1),
        "no tick ran twice: {keys:?}"
    );
    pause(&http_a, &schedules, id);
}

#[test]
fn one_server_on_sqlite_runs_each_tick_once_and_backfills_after_a_stop() {
    let server = Server::start(&data_dir("sched-sqlite"), None);
    let http = Http::new(&server);
    let schedules = function(&http, "tick", TICK);
    let (id, first) = every_second(&http, &schedules);

    let last = first + 14_000;
    sleep_until(last + 200);
    wait_finished(&http, &schedules, id, last);
    let mut server = server;
    server.stop();
    let before = sqlite_runs(&server, id);
    let stopped_at = before
        .last()
        .and_then(|r| r["due_at"].as_i64())
        .expect("runs");
    assert_each_tick_once(&before, &sqlite_keys(&server), first, stopped_at);

    std::thread::sleep(Duration::from_secs(6));
    let server = server.restart_stopped();
    let http = Http::new(&server);
    let backfill = assert_backfilled_once(&http, &schedules, id, stopped_at, 6_000);
    let keys = sqlite_keys(&server);
    assert!(
        keys.keys().all(|t| *t <= stopped_at || *t >= backfill),
        "nothing ran for the skipped ticks: {keys:?}"
    );
    assert!(
        keys.values().all(|n| *n == 1),
        "no tick ran twice: {keys:?}"
    );

    // Schedule runs are invocation records with trigger `schedule`, and the event reached the
    // script whole.
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let (s, b) = http.get(
            &format!("{FUNCTIONS}/tick/invocations?limit=1000"),
            Some(ADMIN),
        );
        assert_eq!(s, 200, "{b}");
        let records: Vec<Value> = b
            .as_array()
            .expect("list")
            .iter()
            .filter(|r| r["trigger"] == "schedule")
            .cloned()
            .collect();
        if records.len() >= 18 {
            break records;
        }
        assert!(Instant::now() < deadline, "schedule records: {b}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let logs: Vec<String> = records
        .iter()
        .flat_map(|r| r["logs"].as_array().cloned().unwrap_or_default())
        .filter_map(|l| l["message"].as_str().map(str::to_string))
        .collect();
    assert!(
        logs.contains(&format!("tick {backfill} backfill=true payload=hi")),
        "{logs:?}"
    );
    assert!(
        logs.contains(&format!("tick {first} backfill=false payload=hi")),
        "{logs:?}"
    );

    // Metrics: runs by outcome, how late they started, the ticks given up.
    let (s, metrics) = http.get("/metrics", None);
    assert_eq!(s, 200);
    let metrics = metrics.as_str().expect("text").to_string();
    let ok_runs = metrics
        .lines()
        .find(|l| {
            l.starts_with("picloud_schedule_runs_total{")
                && l.contains("function=\"tick\"")
                && l.contains("outcome=\"ok\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no schedule run series: {metrics}"));
    assert!(ok_runs >= 3, "runs since the restart: {ok_runs}");
    assert!(
        metrics.contains("picloud_schedule_skipped_ticks_total{function=\"tick\",tenant=\"acme\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("picloud_schedule_late_seconds_bucket"),
        "{metrics}"
    );
    promtool_accepts(&metrics);

    // Paused: nothing runs. Resumed: from the next tick, the paused ones not made up.
    pause(&http, &schedules, id);
    let paused_at = now_ms();
    std::thread::sleep(Duration::from_millis(2500));
    let (s, b) = http.call(
        "PATCH",
        &format!("{schedules}/{id}"),
        Some(ADMIN),
        Body::Json(json!({ "enabled": true })),
    );
    assert_eq!(s, 200, "{b}");
    let resumed_at = now_ms();
    let next = b["next_run_at"].as_i64().expect("next run");
    assert!(next > resumed_at - 1000, "{b}");
    wait_finished(&http, &schedules, id, next);
    let runs = runs(&http, &schedules, id);
    assert!(
        runs.iter().all(|r| {
            let due = r["due_at"].as_i64().unwrap_or(0);
            due <= paused_at + 1000 || due >= next
        }),
        "no tick of the pause ran: {runs:?}"
    );
    let resumed = runs
        .iter()
        .find(|r| r["due_at"].as_i64() == Some(next))
        .expect("the first tick after resuming");
    assert_eq!(resumed["backfill"], false, "{resumed}");

    // Deleted: gone, and its runs with it.
    let (s, _) = http.call(
        "DELETE",
        &format!("{schedules}/{id}"),
        Some(ADMIN),
        Body::None,
    );
    assert_eq!(s, 204);
    let (s, b) = http.get(&format!("{schedules}/{id}"), Some(ADMIN));
    assert_eq!(
        (s, b["error"]["kind"].as_str()),
        (404, Some("not_found")),
        "{b}"
    );
}

#[test]
fn a_server_killed_mid_run_leaves_that_tick_abandoned_never_run_twice() {
    let dir = data_dir("sched-killed");
    let args = ["--schedule-lease-margin-seconds", "1"];
    let mut server = Server::start_with_args(&dir, &args);
    let http = Http::new(&server);
    let (s, _) = http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "acme" }));
    assert_eq!(s, 201);
    let (s, b) = http.post(
        FUNCTIONS,
        Some(ADMIN),
        json!({ "name": "slow", "source": SLOW, "deploy": true,
                "limits": { "fuel": 10_000_000_000u64, "timeout_ms": 5000 } }),
    );
    assert_eq!(s, 201, "{b}");
    let schedules = format!("{FUNCTIONS}/slow/schedules");
    let (id, first) = every_second(&http, &schedules);

    // The first tick computes for about a second: kill the server as soon as it is claimed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(run) = sqlite_runs(&server, id).first() {
            assert_eq!(
                (run["due_at"].as_i64(), &run["outcome"]),
                (Some(first), &Value::Null),
                "{run}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the first tick was not claimed");
        std::thread::sleep(Duration::from_millis(10));
    }
    // ...and once its script has started (it writes its key first, then computes for 2.5 s):
    // killed any earlier, the tick would be abandoned without having run at all.
    while !sqlite_keys(&server).contains_key(&first) {
        assert!(
            Instant::now() < deadline,
            "the first tick's script did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    let server = Server::start_with_args(&dir, &args);
    let http = Http::new(&server);

    // Its lease (the 5 s timeout and the 1 s margin) lapses; the next claim marks the tick
    // abandoned and handles the ticks missed meanwhile by the backfill rule.
    let deadline = Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let runs = runs(&http, &schedules, id);
        if runs.len() >= 2 && !runs[1]["outcome"].is_null() {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "no run after the lease: {runs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Paused, and its last run over: every tick from the first to the last claimed one was
    // either claimed or counted as skipped.
    pause(&http, &schedules, id);
    let deadline = Instant::now() + Duration::from_secs(30);
    let sched = loop {
        let (_, sched) = http.get(&format!("{schedules}/{id}"), Some(ADMIN));
        if sched["running"] == false {
            break sched;
        }
        assert!(Instant::now() < deadline, "still running: {sched}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let all = self::runs(&http, &schedules, id);
    assert_eq!(all[..2], runs[..2], "{all:?}");
    assert_eq!(runs[0]["due_at"].as_i64(), Some(first), "{runs:?}");
    assert_eq!(runs[0]["outcome"], "abandoned", "{runs:?}");
    let next = runs[1]["due_at"].as_i64().expect("tick");
    assert_eq!(runs[1]["backfill"], true, "{runs:?}");
    assert!(
        next >= first + 6000,
        "not before the lease lapsed: {runs:?}"
    );
    let last = all.last().and_then(|r| r["due_at"].as_i64()).expect("tick");
    assert_eq!(
        sched["skipped_ticks"].as_i64(),
        Some((last - first) / 1000 + 1 - all.len() as i64),
        "{sched} {all:?}"
    );
    let keys = sqlite_keys(&server);
    assert_eq!(
        keys.get(&first),
        Some(&1),
        "the killed tick started once, and only once: {keys:?}"
    );
}

#[test]
fn refused_schedules_save_nothing() {
    let server = Server::start(&data_dir("sched-refused"), None);
    let http = Http::new(&server);
    let schedules = function(&http, "tick", TICK);
    let refuse = |body: Value, status: u16, needle: &str| {
        let (s, b) = http.post(&schedules, Some(ADMIN), body.clone());
        assert_eq!(s, status, "{body} → {b}");
        let message = b["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body} → {message}");
    };
    refuse(
        json!({ "cron": "61 * * * *" }),
        422,
        "invalid cron expression",
    );
    refuse(json!({ "cron": "* * *" }), 422, "3 fields");
    refuse(json!({ "cron": "0 0 0 30 2 *" }), 422, "never fires");
    refuse(json!({ "cron": "0 0 0 1 1 * 2001" }), 422, "never fires");
    // More than once a minute needs the admin's permission, even asked by the admin: the
    // permission is the tenant's, on record.
    refuse(
        json!({ "cron": "*/10 * * * * *" }),
        403,
        "more than once a minute",
    );
    refuse(
        json!({ "cron": "0,30 * * * * *" }),
        403,
        "an admin must first allow",
    );
    refuse(
        json!({ "cron": "@daily", "time_zone": "Mars/Olympus" }),
        422,
        "unknown time zone",
    );
    refuse(
        json!({ "cron": "@daily", "payload": "x".repeat(20_000) }),
        422,
        "payload",
    );
    refuse(
        json!({ "cron": "@daily", "every": 5 }),
        422,
        "unknown field",
    );

    // A function without `on_schedule`, and one with nothing deployed.
    let (s, b) = http.post(
        FUNCTIONS,
        Some(ADMIN),
        json!({ "name": "plain", "source": "fn handle(req) { 1 }", "deploy": true }),
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = http.post(
        &format!("{FUNCTIONS}/plain/schedules"),
        Some(ADMIN),
        json!({ "cron": "@daily" }),
    );
    assert_eq!(s, 422, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("fn on_schedule(event)")),
        "{b}"
    );
    let (s, b) = http.post(
        FUNCTIONS,
        Some(ADMIN),
        json!({ "name": "draft", "source": TICK }),
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = http.post(
        &format!("{FUNCTIONS}/draft/schedules"),
        Some(ADMIN),
        json!({ "cron": "@daily" }),
    );
    assert_eq!(
        (s, b["error"]["kind"].as_str()),
        (409, Some("conflict")),
        "{b}"
    );

    for f in ["tick", "plain", "draft"] {
        let (s, b) = http.get(&format!("{FUNCTIONS}/{f}/schedules"), Some(ADMIN));
        assert_eq!((s, b.as_array().map(Vec::len)), (200, Some(0)), "{f}: {b}");
    }

    // A valid one in a time zone, shown as given.
    let (s, b) = http.post(
        &schedules,
        Some(ADMIN),
        json!({ "cron": "30 2 * * *", "time_zone": "America/New_York", "enabled": false }),
    );
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        (
            b["cron"].as_str(),
            b["time_zone"].as_str(),
            b["enabled"].as_bool(),
            &b["next_run_at"]
        ),
        (
            Some("30 2 * * *"),
            Some("America/New_York"),
            Some(false),
            &Value::Null
        ),
        "{b}"
    );
    let id = b["id"].as_i64().expect("an id");

    // While it exists (paused too), a version without `on_schedule` does not become active:
    // not by a deploying save (which saves nothing), nor by deploy; saving it alone is fine.
    let versions = schedules.replace("/schedules", "/versions");
    let count = || {
        let (s, b) = http.get(&versions, Some(ADMIN));
        assert_eq!(s, 200, "{b}");
        b.as_array().map_or(0, Vec::len)
    };
    let before = count();
    let plain = json!({ "source": "fn handle(req) { 2 }", "deploy": true });
    let (s, b) = http.post(&versions, Some(ADMIN), plain);
    assert_eq!(
        (s, b["error"]["kind"].as_str()),
        (409, Some("conflict")),
        "{b}"
    );
    let message = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("fn on_schedule(event)") && message.contains(&format!("({id})")),
        "{message}"
    );
    assert_eq!(count(), before, "a refused deploying save saves nothing");
    let (s, saved) = http.post(
        &versions,
        Some(ADMIN),
        json!({ "source": "fn handle(req) { 2 }" }),
    );
    assert_eq!(s, 201, "{saved}");
    let (s, b) = http.post(
        &schedules.replace("/schedules", "/deploy"),
        Some(ADMIN),
        json!({ "version": saved["version"] }),
    );
    assert_eq!(
        (s, b["error"]["kind"].as_str()),
        (409, Some("conflict")),
        "{b}"
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("({id})"))),
        "{b}"
    );

    // Another tenant's token cannot see it.
    let (s, _) = http.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "other" }));
    assert_eq!(s, 201);
    let (s, t) = http.post(
        "/api/v1/tenants/other/tokens",
        Some(ADMIN),
        json!({ "name": "t" }),
    );
    assert_eq!(s, 201);
    let other = t["token"].as_str().expect("token");
    let (s, _) = http.get(&schedules, Some(other));
    assert_eq!(s, 404);
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces) start at state: utime and stime
    // are the 12th and 13th of those.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn a_scheduler_with_nothing_due_sleeps() {
    let server = Server::start(&data_dir("sched-idle"), None);
    let http = Http::new(&server);
    let schedules = function(&http, "tick", TICK);
    let (s, b) = http.post(&schedules, Some(ADMIN), json!({ "cron": "@yearly" }));
    assert_eq!(s, 201, "{b}");
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_ticks(server.child.id());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(server.child.id()) - before;
    // A scheduler that polled, or spun on a due-but-leased schedule, would use most of the
    // 300 clock ticks (10 ms each) of these 3 s; an idle server uses none.
    assert!(used <= 10, "{used} clock ticks of CPU in 3 idle seconds");
}

fn sqlite_runs(server: &Server, id: i64) -> Vec<Value> {
    let url = format!(
        "sqlite://{}?mode=ro",
        server.data_dir.join("picloud.db").display()
    );
    let rows: Vec<(i64, bool, Option<String>)> = block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query_as(
            "SELECT due_at, backfill, outcome FROM schedule_runs WHERE schedule_id = $1 ORDER BY due_at",
        )
        .bind(id)
        .fetch_all(&mut conn)
        .await
        .expect("runs")
    });
    rows.into_iter()
        .map(|(due_at, backfill, outcome)| json!({ "due_at": due_at, "backfill": backfill, "outcome": outcome }))
        .collect()
}

/// "Run now": test-invoke with a schedule runs `on_schedule` with that schedule's payload at
/// once, recorded as a test run of that schedule (not one of its ticks); another function's
/// schedule is not found.
#[test]
fn a_schedule_runs_now_on_request() {
    let server = Server::start(&data_dir("sched-run-now"), None);
    let http = Http::new(&server);
    let schedules = function(&http, "tick", TICK);
    let (s, b) = http.post(
        &schedules,
        Some(ADMIN),
        json!({ "cron": "@yearly", "payload": { "greeting": "now" } }),
    );
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_i64().expect("id");
    let before = http.get(&format!("{schedules}/{id}/runs"), Some(ADMIN)).1;
    let (s, r) = http.post(
        &format!("{FUNCTIONS}/tick/invoke"),
        Some(ADMIN),
        json!({ "schedule": id }),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["outcome"]["kind"], "ok", "{r}");
    let logged = r["logs"][0]["message"].as_str().unwrap_or_default();
    assert!(
        logged.contains("backfill=false payload=now"),
        "the schedule's event: {logged}"
    );
    // Not one of its ticks: the run history is unchanged; the record names the schedule.
    assert_eq!(
        http.get(&format!("{schedules}/{id}/runs"), Some(ADMIN)).1,
        before
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let record = loop {
        let (_, list) = http.get(&format!("{FUNCTIONS}/tick/invocations"), Some(ADMIN));
        if let Some(r) = list.as_array().and_then(|l| l.first()).cloned() {
            break r;
        }
        assert!(Instant::now() < deadline, "no record");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (record["trigger"].as_str(), record["schedule_id"].as_i64()),
        (Some("test"), Some(id))
    );
    // A schedule of another function is not this function's to run.
    let other = function(&http, "other", TICK);
    let (s, b) = http.post(&other, Some(ADMIN), json!({ "cron": "@daily" }));
    assert_eq!(s, 201, "{b}");
    let (s, e) = http.post(
        &format!("{FUNCTIONS}/tick/invoke"),
        Some(ADMIN),
        json!({ "schedule": b["id"] }),
    );
    assert_eq!(
        (s, e["error"]["message"].as_str()),
        (404, Some("no such schedule"))
    );
}
