//! `picloud-http-bench`: PiCloud's function endpoint over real HTTP, measured with `wrk` against
//! a bare axum hello handler in the same run (the limit of the HTTP stack), in both isolation
//! modes, directly and through Caddy; and the whole process tree's idle CPU and memory.
//! Results go to `benches/results/http.json` and the generated section of
//! `docs/performance.md`.
//!
//! Run with `scripts/bench-http [--seconds N] [--idle-seconds N]`. `wrk` runs on the same two
//! cores as the server, so every rate here is shared with the load generator.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};

mod doc;
mod harness;

use harness::{Proc, caddy, deploy, flag, wrk};

const HELLO: &str = r#"fn handle(req) { `hello ${req.query.name ?? "world"}` }"#;

/// Both load shapes: 16 connections on 2 threads, and 1 connection.
fn load(url: &str, seconds: u64) -> Result<Value> {
    wrk(url, 2, 16, 2)?; // warm-up
    Ok(json!({ "c16": wrk(url, 2, 16, seconds)?, "c1": wrk(url, 1, 1, seconds)? }))
}

/// The bare axum hello handler, in this process.
fn axum_hello(rt: &tokio::runtime::Runtime) -> Result<u16> {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello world" }));
    rt.spawn(async move { axum::serve(listener, app).await });
    Ok(port)
}

/// Every process in the tree under `pid` (the server, its zygote, the warm workers).
fn tree(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
                if ppid == Some(parent) && !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        i += 1;
    }
    all
}

/// (CPU clock ticks, RSS kB, PSS kB) summed over the tree.
fn usage(pids: &[i32]) -> (u64, u64, u64) {
    let mut total = (0, 0, 0);
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            total.0 += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        }
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let kb = |key: &str| {
            rollup
                .lines()
                .find_map(|l| {
                    l.strip_prefix(key)?
                        .split_whitespace()
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
        };
        total.1 += kb("Rss:");
        total.2 += kb("Pss:");
    }
    total
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// `picloud serve` with the hello function deployed and the fairness limits off: this
/// benchmark measures the path.
fn serve(picloud: &Path, dir: &Path, isolation: &str) -> Result<(Proc, u16)> {
    let (server, port) = harness::serve(
        picloud,
        dir,
        isolation,
        &[
            "--function-rate",
            "0",
            "--tenant-rate",
            "0",
            "--tenant-concurrency",
            "1000",
        ],
    )?;
    deploy(port, "bench", "hello", HELLO, json!({ "concurrency": 64 }))?;
    Ok((server, port))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds = flag(&args, "--seconds").unwrap_or(10);
    let idle_seconds = flag(&args, "--idle-seconds").unwrap_or(60);
    let harness::Paths {
        root,
        exe_dir,
        picloud,
    } = harness::paths()?;
    let work = exe_dir.join("http-bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let mut report = BTreeMap::new();
    let axum_port = axum_hello(&rt)?;
    let axum = load(&format!("http://127.0.0.1:{axum_port}/"), seconds)?;
    eprintln!("axum: {}", axum["c16"]["rps"]);
    report.insert("axum", axum);

    for isolation in ["process", "instance"] {
        let (server, port) = serve(&picloud, &work.join(isolation), isolation)?;
        let pid = server.0.id() as i32;
        if isolation == "process" {
            // Idle: settle, then the whole tree's CPU over `idle_seconds`, and its memory.
            std::thread::sleep(Duration::from_secs(3));
            let pids = tree(pid);
            let (t0, _, _) = usage(&pids);
            std::thread::sleep(Duration::from_secs(idle_seconds));
            let pids_after = tree(pid);
            let (t1, rss, pss) = usage(&pids_after);
            let (server_only_rss, _) = {
                let (_, r, p) = usage(&[pid]);
                (r, p)
            };
            report.insert(
                "idle",
                json!({
                    "seconds": idle_seconds,
                    "cpu_seconds": (t1.saturating_sub(t0)) as f64 / ticks_per_second(),
                    "processes": pids_after.len(),
                    "rss_mib": rss as f64 / 1024.0,
                    "pss_mib": pss as f64 / 1024.0,
                    "server_rss_mib": server_only_rss as f64 / 1024.0,
                }),
            );
            eprintln!("idle: {}", report["idle"]);
        }
        let url = format!("http://127.0.0.1:{port}/fn/bench/hello");
        let direct = load(&url, seconds)?;
        eprintln!("{isolation}: {}", direct["c16"]["rps"]);
        let (_, under_load_rss, under_load_pss) = usage(&tree(pid));
        let mut entry = json!({ "direct": direct, "rss_mib_after_load": under_load_rss as f64 / 1024.0, "pss_mib_after_load": under_load_pss as f64 / 1024.0 });
        if isolation == "process" {
            let (_proxy, caddy_port) = caddy(&root, &work, port)?;
            let via = load(
                &format!("http://127.0.0.1:{caddy_port}/fn/bench/hello"),
                seconds,
            )?;
            eprintln!("{isolation} via caddy: {}", via["c16"]["rps"]);
            entry["via_caddy"] = via;
        }
        report.insert(
            if isolation == "process" {
                "process"
            } else {
                "instance"
            },
            entry,
        );
        drop(server);
    }

    let report = json!(report);
    for (what, r) in [
        ("process", &report["process"]["direct"]),
        ("instance", &report["instance"]["direct"]),
    ] {
        if r["c16"]["non_2xx"].as_u64().unwrap_or(0) > 0 {
            bail!("{what}: answers other than 200 under load: {r}");
        }
    }
    doc::publish(&root, "http", &report, &render(&report))
}

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn render(r: &Value) -> String {
    let axum = n(&r["axum"]["c16"]["rps"]);
    let row = |name: &str, v: &Value| {
        format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |\n",
            n(&v["c16"]["rps"]),
            n(&v["c16"]["p50_ms"]),
            n(&v["c16"]["p99_ms"]),
            n(&v["c1"]["rps"]),
            n(&v["c1"]["p50_ms"]),
            n(&v["c1"]["p99_ms"]),
            n(&v["c16"]["rps"]) / axum,
        )
    };
    let mut out = String::from(
        "### HTTP end to end (`scripts/bench-http`)\n\n\
         `wrk` on the same 2 cores as the server (so every rate is shared with the load \
         generator); hello world through `/fn/{tenant}/{function}` with the routing table, \
         limits, metrics and an invocation record per request.\n\n\
         | server | c16 req/s | c16 p50 ms | c16 p99 ms | c1 req/s | c1 p50 ms | c1 p99 ms | c16 rate ÷ axum |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    out += &row("bare axum hello (baseline)", &r["axum"]);
    out += &row("PiCloud, process isolation", &r["process"]["direct"]);
    out += &row(
        "PiCloud, process isolation, through Caddy",
        &r["process"]["via_caddy"],
    );
    out += &row("PiCloud, instance isolation", &r["instance"]["direct"]);
    let idle = &r["idle"];
    out += &format!(
        "\nTargets: instance ≥ 50 % of axum's rate — **{:.0} %**; process ≥ 2,000 req/s — **{:.0}**.\n\n\
         Idle (process mode, after start-up, {} s): the whole tree ({} processes: server, \
         zygote, warm workers) used **{:.3} CPU-seconds** (target < 0.1); RSS {:.1} MiB summed \
         (PSS {:.1} MiB, shared pages counted once), the server alone {:.1} MiB (target < 64 MB \
         plus the warm workers).\n",
        100.0 * n(&r["instance"]["direct"]["c16"]["rps"]) / axum,
        n(&r["process"]["direct"]["c16"]["rps"]),
        idle["seconds"],
        idle["processes"],
        n(&idle["cpu_seconds"]),
        n(&idle["rss_mib"]),
        n(&idle["pss_mib"]),
        n(&idle["server_rss_mib"]),
    );
    out
}
