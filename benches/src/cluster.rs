//! `picloud-cluster-bench`: what the cluster split costs on the request path. In one run, on
//! one PostgreSQL: `picloud serve` (everything in one process tree, the baseline), one cluster
//! node (`picloud-orchestrator` handing each invocation to `picloud-executor` over its Unix
//! socket), and two nodes behind Caddy on `caddy/Caddyfile.cluster` — all on the same two
//! cores, so the two nodes share them. Results go to `benches/results/cluster.json` and the
//! generated section of `docs/performance.md`.
//!
//! Run with `scripts/bench-cluster [--seconds N]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

mod doc;
mod harness;

use harness::{ADMIN, Proc, deploy, flag, free_port, wait_listening, wrk};

const HELLO: &str = r#"fn handle(req) { `hello ${req.query.name ?? "world"}` }"#;
/// The benchmark measures the path, not the fairness limits.
const NO_LIMITS: [&str; 6] = [
    "--function-rate",
    "0",
    "--tenant-rate",
    "0",
    "--tenant-concurrency",
    "1000",
];

fn load(url: &str, seconds: u64) -> Result<Value> {
    wrk(url, 2, 16, 2)?; // warm-up
    Ok(json!({ "c16": wrk(url, 2, 16, seconds)?, "c1": wrk(url, 1, 1, seconds)? }))
}

fn spawn(bin: &Path, args: &[&str]) -> Result<Proc> {
    let child = Command::new(bin)
        .args(args)
        .env("PICLOUD_ADMIN_TOKEN", ADMIN)
        .env_remove("PICLOUD_DATABASE_URL")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Proc(child))
}

/// A node: an executor on `dir/executor.sock` and an orchestrator; returns both and its port.
fn node(exe_dir: &Path, dir: &Path, url: &str) -> Result<(Proc, Proc, u16)> {
    std::fs::create_dir_all(dir)?;
    let socket = dir.join("executor.sock");
    let cache = dir.join("../module-cache");
    let executor = spawn(
        &exe_dir.join("picloud-executor"),
        &[
            "--executor-socket",
            path(&socket)?,
            "--cache-dir",
            path(&cache)?,
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        ensure!(Instant::now() < deadline, "the executor did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--listen",
        listen.as_str(),
        "--database-url",
        url,
        "--executor-socket",
        path(&socket)?,
        "--data-dir",
        path(dir)?,
    ];
    args.extend(NO_LIMITS);
    let orchestrator = spawn(&exe_dir.join("picloud-orchestrator"), &args)?;
    wait_listening(port)?;
    Ok((executor, orchestrator, port))
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().context("a UTF-8 path")
}

/// Waits until `url` answers 200 (a deploy reaches the nodes through PostgreSQL).
fn wait_ok(url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ureq::get(url).call().is_ok_and(|r| r.status() == 200) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{url} does not answer 200");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fresh_database(rt: &tokio::runtime::Runtime) -> String {
    rt.block_on(picloud_store::testing::fresh_pg_database())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds = flag(&args, "--seconds").unwrap_or(10);
    let harness::Paths {
        root,
        exe_dir,
        picloud,
    } = harness::paths()?;
    for bin in [
        "picloud-manager",
        "picloud-orchestrator",
        "picloud-executor",
    ] {
        ensure!(
            exe_dir.join(bin).exists(),
            "build {bin} first (scripts/bench-cluster does)"
        );
    }
    let work: PathBuf = exe_dir.join("cluster-bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut report = BTreeMap::new();

    // The baseline: everything in one process tree, on PostgreSQL like the cluster.
    {
        let url = fresh_database(&rt);
        let mut extra = vec!["--database-url", url.as_str()];
        extra.extend(NO_LIMITS);
        let (server, port) = harness::serve(&picloud, &work.join("serve"), "process", &extra)?;
        deploy(port, "bench", "hello", HELLO, json!({ "concurrency": 64 }))?;
        let r = load(&format!("http://127.0.0.1:{port}/fn/bench/hello"), seconds)?;
        eprintln!("serve: {}", r["c16"]["rps"]);
        report.insert("serve", r);
        drop(server);
    }

    // The cluster: a manager (deploys only), two nodes, Caddy.
    let url = fresh_database(&rt);
    let (_e1, _o1, port1) = node(&exe_dir, &work.join("node1"), &url)?;
    let manager_port = free_port()?;
    let manager_listen = format!("127.0.0.1:{manager_port}");
    let _manager = spawn(
        &exe_dir.join("picloud-manager"),
        &[
            "--listen",
            manager_listen.as_str(),
            "--database-url",
            url.as_str(),
            "--executor-socket",
            path(&work.join("node1/executor.sock"))?,
            "--data-dir",
            path(&work.join("manager"))?,
        ],
    )?;
    wait_listening(manager_port)?;
    deploy(
        manager_port,
        "bench",
        "hello",
        HELLO,
        json!({ "concurrency": 64 }),
    )?;
    let one = format!("http://127.0.0.1:{port1}/fn/bench/hello");
    wait_ok(&one)?;
    let r = load(&one, seconds)?;
    eprintln!("one node: {}", r["c16"]["rps"]);
    report.insert("node", r);

    let (_e2, _o2, port2) = node(&exe_dir, &work.join("node2"), &url)?;
    wait_ok(&format!("http://127.0.0.1:{port2}/fn/bench/hello"))?;
    let caddy_port = free_port()?;
    let nodes = format!("127.0.0.1:{port1} 127.0.0.1:{port2}");
    let caddy = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(root.join("caddy/Caddyfile.cluster"))
        .env("PICLOUD_SITE", format!("http://127.0.0.1:{caddy_port}"))
        .env("PICLOUD_NODES", &nodes)
        .env("PICLOUD_MANAGER", &manager_listen)
        .env("XDG_DATA_HOME", work.join("caddy-data"))
        .env("XDG_CONFIG_HOME", work.join("caddy-config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("caddy is required (scripts/setup installs it)")?;
    let _caddy = Proc(caddy);
    wait_listening(caddy_port)?;
    let via = format!("http://127.0.0.1:{caddy_port}/fn/bench/hello");
    wait_ok(&via)?;
    let r = load(&via, seconds)?;
    eprintln!("two nodes via caddy: {}", r["c16"]["rps"]);
    report.insert("two_nodes_caddy", r);

    report.insert("machine", harness::machine());
    let report = json!(report);
    for (what, r) in report.as_object().into_iter().flatten() {
        if r["c16"]["non_2xx"].as_u64().unwrap_or(0) > 0 {
            bail!("{what}: answers other than 200 under load: {r}");
        }
    }
    doc::publish(&root, "cluster", &report, &render(&report))
}

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn render(r: &Value) -> String {
    let base = n(&r["serve"]["c16"]["rps"]);
    let base_p50 = n(&r["serve"]["c1"]["p50_ms"]);
    let row = |name: &str, v: &Value| {
        format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            n(&v["c16"]["rps"]),
            n(&v["c16"]["p50_ms"]),
            n(&v["c16"]["p99_ms"]),
            n(&v["c1"]["rps"]),
            n(&v["c1"]["p50_ms"]),
            n(&v["c1"]["p99_ms"]),
            n(&v["c16"]["rps"]) / base,
            n(&v["c1"]["p50_ms"]) / base_p50,
        )
    };
    let m = &r["machine"];
    let mut out = format!(
        "### Cluster mode (`scripts/bench-cluster`)\n\n\
         Measured {} on {} ({} cores, Linux {}), release build. `wrk` against hello world in \
         process isolation, everything on PostgreSQL and on the same 2 cores (the load \
         generator too; the two nodes share them).\n\n\
         | setup | c16 req/s | c16 p50 ms | c16 p99 ms | c1 req/s | c1 p50 ms | c1 p99 ms | c16 rate ÷ serve | c1 p50 ÷ serve |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        m["date"].as_str().unwrap_or("?"),
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
    );
    out += &row("`picloud serve` (baseline)", &r["serve"]);
    out += &row("one node: orchestrator → executor socket", &r["node"]);
    out += &row(
        "two nodes behind Caddy (`Caddyfile.cluster`)",
        &r["two_nodes_caddy"],
    );
    out
}
