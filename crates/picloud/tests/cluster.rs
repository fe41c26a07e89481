//! Cluster mode with real processes on loopback: PostgreSQL, `picloud-manager` (with an
//! executor of its own for test invocations), two nodes each running `picloud-orchestrator` and
//! `picloud-executor`, and Caddy in front on the project's `caddy/Caddyfile.cluster`.
//!
//! One test, in the order an operator would meet these: a deploy is live on every node within
//! a second; a schedule's ticks run once each, and only on a node whose executor answers; under
//! a bounded load through Caddy one node is SIGKILLed and restarted, and every request is
//! answered once (in flight on the dead node: a clean 502), the restarted node takes traffic
//! again, and the invocation records are all there, none twice (the node's spool).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    ADMIN, Body, Caddy, Http, block_on, data_dir, free_port, fresh_pg, pg_keys, shared_cache,
    terminate_connections, workspace_bin,
};
use serde_json::{Value, json};
use sqlx::Connection;

const FUNCTIONS: &str = "/api/v1/tenants/acme/functions";

fn script(version: u32) -> String {
    format!(
        r#"
fn handle(req) {{
	print(`id=${{req.query.id ?? ""}}`);
	#{{ id: req.query.id, version: {version} }}
}}

fn on_schedule(event) {{
	kv_set(`run-${{event.scheduled_at}}-${{random()}}`, 1);
}}
"#
    )
}

/// A process of the cluster, killed when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn kill9(&mut self) {
        // SAFETY: kill(2) on a process this test started.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) },
            0
        );
        let _ = self.child.wait();
    }
}

/// Starts `name` with `args`, its standard error in `log`, and waits for its standard output
/// to say `ready`; returns it with the rest of that line.
fn spawn(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
    ready: &str,
) -> (Proc, String) {
    let mut child = Command::new(workspace_bin(name))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("PICLOUD_DATABASE_URL")
        .env("PICLOUD_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let rest = loop {
        assert!(Instant::now() < deadline, "{name} did not get ready");
        let Some(line) = lines.next() else {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{name} exited before it was ready: {log}");
        };
        if let Some(rest) = line.expect("utf-8").strip_prefix(ready) {
            break rest.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc { child }, rest)
}

fn executor(dir: &Path, name: &str) -> (Proc, PathBuf) {
    let socket = dir.join(format!("{name}.sock"));
    let cache = shared_cache();
    let (proc, _) = spawn(
        "picloud-executor",
        &[
            "--executor-socket",
            socket.to_str().expect("utf-8"),
            "--cache-dir",
            cache.to_str().expect("utf-8"),
        ],
        &[],
        &dir.join(format!("{name}.log")),
        "PiCloud executor listening on unix:",
    );
    (proc, socket)
}

/// One node: an executor and an orchestrator on `port`.
struct Node {
    orchestrator: Proc,
    executor: Proc,
    port: u16,
    dir: PathBuf,
}

impl Node {
    fn start(dir: &Path, name: &str, url: &str, port: u16) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let (executor, socket) = executor(&dir, "executor");
        let orchestrator = Self::orchestrator(&dir, url, port, &socket);
        Self {
            orchestrator,
            executor,
            port,
            dir,
        }
    }

    fn orchestrator(dir: &Path, url: &str, port: u16, socket: &Path) -> Proc {
        let listen = format!("127.0.0.1:{port}");
        // One file per start, so that a restarted node's log keeps the first run's.
        let log = dir.join(format!("orchestrator-{}.log", now_ms()));
        spawn(
            "picloud-orchestrator",
            &[
                "--listen",
                &listen,
                "--database-url",
                url,
                "--executor-socket",
                socket.to_str().expect("utf-8"),
                "--data-dir",
                dir.to_str().expect("utf-8"),
                // The load below is far above the default per-function rate.
                "--function-rate",
                "0",
                "--tenant-rate",
                "0",
            ],
            &[],
            &log,
            "PiCloud orchestrator listening on http://",
        )
        .0
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(&self.dir).expect("node dir").flatten() {
            if entry.file_name().to_string_lossy().ends_with(".log") {
                all += &std::fs::read_to_string(entry.path()).unwrap_or_default();
            }
        }
        all
    }
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A node's answer to `GET /fn/acme/hello`: the version it runs.
fn version_on(http: &Http) -> Option<u64> {
    let (s, b) = http.get("/fn/acme/hello", None);
    (s == 200).then(|| b["version"].as_u64()).flatten()
}

/// The successful invocations a node counted since it started.
fn ok_count(node: &Http) -> f64 {
    let (s, body) = node.get("/metrics", None);
    assert_eq!(s, 200);
    let text = body.as_str().unwrap_or_default().to_string();
    text.lines()
        .filter(|l| {
            l.starts_with("picloud_function_invocations_total{")
                && l.contains("function=\"hello\"")
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_cluster_deploys_everywhere_schedules_once_and_survives_a_killed_node() {
    let url = fresh_pg();
    let dir = data_dir("cluster");

    // The manager, with an executor of its own for test invocations.
    let (_manager_executor, manager_socket) = executor(&dir, "manager-executor");
    let (_manager, manager_addr) = spawn(
        "picloud-manager",
        &[
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &url,
            "--executor-socket",
            manager_socket.to_str().expect("utf-8"),
            "--data-dir",
            dir.join("manager").to_str().expect("utf-8"),
        ],
        &[("PICLOUD_ADMIN_TOKEN", ADMIN)],
        &dir.join("manager.log"),
        "PiCloud manager listening on http://",
    );
    let ports = [free_port(), free_port()];
    let mut node1 = Node::start(&dir, "node1", &url, ports[0]);
    let node2 = Node::start(&dir, "node2", &url, ports[1]);
    let nodes = format!("127.0.0.1:{} 127.0.0.1:{}", ports[0], ports[1]);
    let caddy = Caddy::start(
        "Caddyfile.cluster",
        &[
            ("PICLOUD_NODES", &nodes),
            ("PICLOUD_MANAGER", &manager_addr),
        ],
        &dir,
    );
    let api = Http::at(&caddy.base);
    let on1 = Http::at(&node1.base());
    let on2 = Http::at(&node2.base());

    // Through Caddy to the manager: a tenant and a function, deployed.
    let (s, b) = api.post("/api/v1/tenants", Some(ADMIN), json!({ "name": "acme" }));
    assert_eq!(s, 201, "{b}");
    let (s, b) = api.post(
        FUNCTIONS,
        Some(ADMIN),
        json!({ "name": "hello", "source": script(1), "deploy": true }),
    );
    assert_eq!(s, 201, "{b}");
    // The manager's test invocation runs on its own executor.
    let (s, b) = api.post(&format!("{FUNCTIONS}/hello/invoke"), Some(ADMIN), json!({}));
    assert_eq!((s, &b["outcome"]["kind"]), (200, &json!("ok")), "{b}");
    wait_for("version 1 on both nodes", Duration::from_secs(5), || {
        version_on(&on1) == Some(1) && version_on(&on2) == Some(1)
    });

    // A deploy is live on every node within a second of the manager's answer.
    let (s, b) = api.post(
        &format!("{FUNCTIONS}/hello/versions"),
        Some(ADMIN),
        json!({ "source": script(2) }),
    );
    assert_eq!(s, 201, "{b}");
    let version = b["version"].as_i64().expect("version");
    let (s, b) = api.post(
        &format!("{FUNCTIONS}/hello/deploy"),
        Some(ADMIN),
        json!({ "version": version }),
    );
    assert_eq!(s, 200, "{b}");
    let deployed = Instant::now();
    wait_for("version 2 on both nodes", Duration::from_secs(1), || {
        version_on(&on1) == Some(2) && version_on(&on2) == Some(2)
    });
    eprintln!("deploy live on both nodes after {:?}", deployed.elapsed());

    // Every connection to the database cut (as a PostgreSQL restart would): each node
    // reconnects, reloads everything, and has the next deploy.
    assert!(terminate_connections(&url) > 0);
    let (s, b) = api.post(
        &format!("{FUNCTIONS}/hello/versions"),
        Some(ADMIN),
        json!({ "source": script(3), "deploy": true }),
    );
    assert_eq!(s, 201, "{b}");
    wait_for(
        "version 3 on both nodes after reconnecting",
        Duration::from_secs(10),
        || version_on(&on1) == Some(3) && version_on(&on2) == Some(3),
    );

    // Schedules: every second, each tick claimed once across the cluster.
    let schedules = format!("{FUNCTIONS}/hello/schedules");
    let (s, b) = api.call(
        "PATCH",
        "/api/v1/tenants/acme",
        Some(ADMIN),
        common::Body::Json(json!({ "sub_minute_schedules": true })),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = api.post(&schedules, Some(ADMIN), json!({ "cron": "* * * * * *" }));
    assert_eq!(s, 201, "{b}");
    let schedule = b["id"].as_i64().expect("id");
    std::thread::sleep(Duration::from_secs(3));
    // Node 1 loses its executor: it stops being ready, and claims no tick while it is not.
    node1.executor.kill9();
    wait_for(
        "node 1 unready without its executor",
        Duration::from_secs(10),
        || on1.get("/readyz", None).0 == 503,
    );
    let unhealthy_from = now_ms();
    std::thread::sleep(Duration::from_secs(4));
    let (s, b) = api.call(
        "PATCH",
        &format!("{schedules}/{schedule}"),
        Some(ADMIN),
        Body::Json(json!({ "enabled": false })),
    );
    assert_eq!(s, 200, "{b}");
    std::thread::sleep(Duration::from_secs(2));
    let (s, runs) = api.get(
        &format!("{schedules}/{schedule}/runs?limit=1000"),
        Some(ADMIN),
    );
    assert_eq!(s, 200, "{runs}");
    let runs = runs.as_array().expect("runs").clone();
    assert!(runs.len() >= 5, "{runs:?}");
    let late: Vec<&Value> = runs
        .iter()
        .filter(|r| r["due_at"].as_i64() > Some(unhealthy_from))
        .collect();
    assert!(
        late.len() >= 3,
        "ticks ran while node 1 was unhealthy: {runs:?}"
    );
    for run in &late {
        assert_eq!(
            run["outcome"], "ok",
            "a tick ran on the unhealthy node: {run}"
        );
    }
    let by_tick = pg_keys(&url);
    assert!(
        by_tick.values().all(|n| *n == 1),
        "a tick ran twice: {by_tick:?}"
    );
    let ran_ok = runs.iter().filter(|r| r["outcome"] == "ok").count();
    assert_eq!(
        by_tick.len(),
        ran_ok,
        "one key per tick that ran: {by_tick:?} {runs:?}"
    );
    let failed: Vec<&Value> = runs.iter().filter(|r| r["outcome"] != "ok").collect();
    assert!(
        failed.len() <= 1,
        "more than the one tick claimed as node 1's executor died failed: {failed:?}"
    );
    // Node 1's executor again.
    let (again, _) = executor(&node1.dir, "executor");
    node1.executor = again;
    wait_for("node 1 ready again", Duration::from_secs(10), || {
        on1.get("/readyz", None).0 == 200
    });

    // A bounded load through Caddy (at most REQUESTS, stopped once the restarted node has
    // served some): node 1 is SIGKILLed after KILL_AT requests and restarted after another
    // KILL_AT.
    const CLIENTS: usize = 6;
    const REQUESTS: u64 = 20_000;
    const KILL_AT: u64 = 1_000;
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<(u64, u16, Value)>>> = Arc::default();
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (next, stop, answers) =
                (Arc::clone(&next), Arc::clone(&stop), Arc::clone(&answers));
            let base = caddy.base.clone();
            std::thread::spawn(move || {
                let http = Http::at(&base);
                loop {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if id >= REQUESTS || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // Half GET, half POST: neither is ever sent to a second node once it
                    // reached a first.
                    let path = format!("/fn/acme/hello?id={id}");
                    let (s, b) = if c % 2 == 0 {
                        http.get(&path, None)
                    } else {
                        http.post(&path, None, json!({ "n": id }))
                    };
                    answers.lock().expect("answers").push((id, s, b));
                }
            })
        })
        .collect();
    let progress = |n: u64| {
        wait_for("load progress", Duration::from_secs(60), || {
            next.load(Ordering::Relaxed) >= n
        })
    };
    progress(KILL_AT);
    node1.orchestrator.kill9();
    node1.executor.kill9();
    let killed_at = Instant::now();
    progress(2 * KILL_AT);
    let (again, socket) = executor(&node1.dir, "executor");
    node1.executor = again;
    node1.orchestrator = Node::orchestrator(&node1.dir, &url, node1.port, &socket);
    eprintln!("node 1 down for {:?}", killed_at.elapsed());
    // Caddy's active check brings it back within a second or two; keep the load going until
    // the restarted node has served some of it.
    wait_for(
        "the restarted node takes traffic",
        Duration::from_secs(30),
        || ok_count(&on1) >= 50.0 || next.load(Ordering::Relaxed) >= REQUESTS,
    );
    let restarted_served = ok_count(&on1);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    let answers = answers.lock().expect("answers").clone();
    eprintln!(
        "{} requests in {:?}; node 1 served {restarted_served} after its restart",
        answers.len(),
        started.elapsed()
    );
    assert!(
        restarted_served >= 50.0,
        "the restarted node took no traffic ({restarted_served})"
    );

    // Every request got one answer: 200 with its own id, or a clean 502 (in flight on the
    // node that died) — a handful at most.
    let mut ok = BTreeMap::new();
    let mut failed = Vec::new();
    for (id, status, body) in &answers {
        match status {
            200 => {
                assert_eq!(body["id"], json!(id.to_string()), "{body}");
                assert!(ok.insert(*id, ()).is_none());
            }
            502 => failed.push(*id),
            _ => panic!("request {id}: {status} {body}"),
        }
    }
    assert!(
        failed.len() <= 2 * CLIENTS,
        "{} requests failed: {failed:?}",
        failed.len()
    );
    eprintln!("{} answered 200, {} answered 502", ok.len(), failed.len());

    // The records: one for each request answered 200, including those node 1 had only
    // spooled when it died (it wrote them when it restarted); none twice.
    let mut records = BTreeMap::new();
    wait_for(
        "every answered request's record",
        Duration::from_secs(30),
        || {
            records = http_records_by_id(&url);
            ok.keys().all(|id| records.contains_key(id))
        },
    );
    let doubled: Vec<_> = records.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "records written twice: {doubled:?}");
    for id in records.keys() {
        assert!(
            ok.contains_key(id) || failed.contains(id),
            "a record of request {id}, which was never sent"
        );
    }
    assert!(
        node1.logs().contains("wrote spooled invocation records"),
        "node 1 had records queued when it was killed, and wrote them from its spool on restart"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How many HTTP invocation records each request id has.
fn http_records_by_id(url: &str) -> BTreeMap<u64, usize> {
    let logs: Vec<String> = block_on(async {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query_scalar("SELECT logs FROM invocations WHERE trigger_kind = 'http'")
            .fetch_all(&mut conn)
            .await
            .expect("records")
    });
    let mut by_id = BTreeMap::new();
    for logs in logs {
        let lines: Vec<Value> = serde_json::from_str(&logs).expect("logs are JSON");
        for line in lines {
            if let Some(id) = line["message"]
                .as_str()
                .and_then(|m| m.strip_prefix("id="))
                .and_then(|id| id.parse::<u64>().ok())
            {
                *by_id.entry(id).or_insert(0) += 1;
            }
        }
    }
    by_id
}
