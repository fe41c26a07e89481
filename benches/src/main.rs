//! `picloud-bench`: the executor's benchmarks. Every figure is reported beside a baseline
//! measured in the same run, as a ratio; results go to `benches/results/executor.json` and the
//! generated section of `docs/performance.md`.
//!
//! Run with `scripts/bench` (release build). The load generator runs in this process and shares
//! the machine's cores with the executor and its workers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use picloud_executor_core::{Executor, ExecutorConfig, Isolation};
use picloud_shared::{FunctionRef, InvocationRequest, Limits};
use serde_json::json;

mod doc;
mod harness;

const HELLO: &str = r#"fn handle(req) { `hello ${req.query.name ?? "world"}` }"#;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = flag(&args, "--seconds").unwrap_or(5);
    // `--only hello|pool|compute|memory` runs one section and writes nothing (for tuning).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let wanted = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let harness::Paths {
        root,
        exe_dir,
        picloud,
    } = harness::paths()?;
    let cache = exe_dir.join("bench-module-cache");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = BTreeMap::new();
    report.insert("machine".to_string(), harness::machine());

    let config = |isolation| {
        let mut c = ExecutorConfig::new(isolation, &cache);
        c.process.program = Some(picloud.clone());
        c.process.min_warm = 4;
        c
    };

    // --- hello world: both modes, 1 and 2 clients, against native Rhai in this process ---
    let mut hello = Vec::new();
    for clients in [1usize, 2].into_iter().filter(|_| wanted("hello")) {
        let native = native_hello(Duration::from_secs(seconds), clients);
        hello
            .push(json!({ "what": "native rhai (baseline)", "clients": clients, "stats": native }));
        for isolation in [Isolation::Process, Isolation::Instance] {
            let ex = Arc::new(rt.block_on(Executor::start(config(isolation)))?);
            let stats = rt.block_on(load(
                ex.clone(),
                HELLO,
                Duration::from_secs(seconds),
                clients,
            ));
            if only.is_some() {
                eprintln!("{} c{clients}: {stats}", isolation.as_str());
            }
            hello.push(json!({ "what": isolation.as_str(), "clients": clients, "stats": stats }));
        }
        // Process mode with workers reused up to 8 times for the same function.
        let mut reuse = config(Isolation::Process);
        reuse.process.max_invocations_per_worker = 8;
        let ex = Arc::new(rt.block_on(Executor::start(reuse))?);
        let stats = rt.block_on(load_for(ex, HELLO, Duration::from_secs(seconds), clients));
        if only.is_some() {
            eprintln!("process reused c{clients}: {stats}");
        }
        hello.push(
            json!({ "what": "process, worker reused ×8", "clients": clients, "stats": stats }),
        );
        eprintln!("hello world, {clients} client(s): done");
    }
    report.insert("hello".into(), json!(hello));

    // --- warm worker vs fork+exec of a fresh one per request; refill rate ---
    if wanted("pool") {
        let warm = {
            let ex = Arc::new(rt.block_on(Executor::start(config(Isolation::Process)))?);
            rt.block_on(load(ex, HELLO, Duration::from_secs(seconds), 1))
        };
        let fresh = fork_exec(&picloud, &cache, 200)?;
        let fresh_sandboxed =
            rt.block_on(fresh_pool_per_request(config(Isolation::Process), 50))?;
        let refill = rt.block_on(refill_rate(config(Isolation::Process), 64))?;
        report.insert(
        "pool".into(),
        json!({ "warm": warm, "fork_exec": fresh, "fresh_sandboxed": fresh_sandboxed, "refill": refill }),
    );
        eprintln!("pool: done");
    }

    // --- compute: guest vs native rhai ---
    if wanted("compute") {
        let ex = rt.block_on(Executor::start(config(Isolation::Instance)))?;
        let unmetered = rt.block_on(Executor::start(ExecutorConfig {
            consume_fuel: false,
            ..config(Isolation::Instance)
        }))?;
        let mut compute = Vec::new();
        for (name, script) in COMPUTE {
            let guest = rt.block_on(time_guest(&ex, script, 5))?;
            let no_fuel = rt.block_on(time_guest(&unmetered, script, 5))?;
            let native = time_native(script, 5)?;
            compute.push(json!({
                "script": name,
                "guest_ms": guest.0, "guest_no_fuel_ms": no_fuel.0, "native_ms": native,
                "ratio": guest.0 / native, "ratio_no_fuel": no_fuel.0 / native, "fuel": guest.1,
            }));
            eprintln!(
                "compute {name}: guest {:.1} ms, no fuel {:.1} ms, native {native:.1} ms",
                guest.0, no_fuel.0
            );
        }
        report.insert("compute".into(), json!(compute));
        drop((ex, unmetered));
    }

    // --- memory of the zygote and of a warm worker ---
    if wanted("memory") {
        let memory = rt.block_on(memory(config(Isolation::Process)))?;
        report.insert("memory".into(), memory);
    }
    if only.is_some() {
        return Ok(()); // a partial run does not overwrite the recorded results
    }

    let report = serde_json::Value::Object(report.into_iter().collect());
    doc::publish(&root, "executor", &report, &render(&report))
}

fn flag(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn stats(mut micros: Vec<u64>, elapsed: Duration, errors: usize) -> serde_json::Value {
    micros.sort_unstable();
    json!({
        "count": micros.len(),
        "errors": errors,
        "per_second": micros.len() as f64 / elapsed.as_secs_f64(),
        "p50_ms": percentile(&micros, 0.50),
        "p99_ms": percentile(&micros, 0.99),
    })
}

/// Closed-loop load: `clients` tasks, each invoking back to back for `duration`.
async fn load(
    ex: Arc<Executor>,
    script: &'static str,
    duration: Duration,
    clients: usize,
) -> serde_json::Value {
    load_as(ex, None, script, duration, clients).await
}

/// As [`load`], every invocation for one function (so workers may be reused).
async fn load_for(
    ex: Arc<Executor>,
    script: &'static str,
    duration: Duration,
    clients: usize,
) -> serde_json::Value {
    let owner = FunctionRef::new("bench", "hello");
    load_as(ex, Some(owner), script, duration, clients).await
}

async fn load_as(
    ex: Arc<Executor>,
    owner: Option<FunctionRef>,
    script: &'static str,
    duration: Duration,
    clients: usize,
) -> serde_json::Value {
    // Warm-up: one second, not measured.
    let warm_up = Duration::from_secs(1);
    run_clients(ex.clone(), owner.clone(), script, warm_up, clients).await;
    let started = Instant::now();
    let (micros, errors) = run_clients(ex, owner, script, duration, clients).await;
    stats(micros, started.elapsed(), errors)
}

async fn run_clients(
    ex: Arc<Executor>,
    owner: Option<FunctionRef>,
    script: &'static str,
    duration: Duration,
    clients: usize,
) -> (Vec<u64>, usize) {
    let end = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let ex = ex.clone();
        let owner = owner.clone();
        tasks.spawn(async move {
            let request = InvocationRequest::get("/");
            let limits = Limits::default();
            let mut micros = Vec::new();
            let mut errors = 0;
            while Instant::now() < end {
                let t = Instant::now();
                let r = match &owner {
                    Some(o) => ex.invoke_for(o, script, &request, &limits).await,
                    None => ex.invoke(script, &request, &limits).await,
                };
                micros.push(t.elapsed().as_micros() as u64);
                if !r.outcome.is_ok() {
                    errors += 1;
                }
            }
            (micros, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(Ok((m, e))) = tasks.join_next().await {
        all.extend(m);
        errors += e;
    }
    (all, errors)
}

/// The same work as the guest's hello world (compile, run top level, call `handle` with a
/// request map), on native Rhai with an engine built once.
fn native_hello(duration: Duration, clients: usize) -> serde_json::Value {
    let end = Instant::now() + duration + Duration::from_secs(1);
    let measure_from = Instant::now() + Duration::from_secs(1);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let engine = native_engine();
                let mut micros = Vec::new();
                while Instant::now() < end {
                    let t = Instant::now();
                    let ast = engine.compile(HELLO).expect("compiles");
                    let mut req = rhai::Map::new();
                    req.insert("path".into(), "/".into());
                    req.insert("query".into(), rhai::Map::new().into());
                    let mut scope = rhai::Scope::new();
                    let out: rhai::Dynamic = engine
                        .call_fn(&mut scope, &ast, "handle", (rhai::Dynamic::from_map(req),))
                        .expect("runs");
                    let _ = std::hint::black_box(out);
                    if t >= measure_from {
                        micros.push(t.elapsed().as_micros() as u64);
                    }
                }
                micros
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().unwrap_or_default());
    }
    stats(all, duration, 0)
}

fn native_engine() -> rhai::Engine {
    let mut e = rhai::Engine::new();
    let l = Limits::default().script;
    e.set_max_call_levels(l.max_call_levels as usize)
        .set_max_expr_depths(
            l.max_expr_depth as usize,
            l.max_function_expr_depth as usize,
        )
        .set_max_string_size(l.max_string_bytes as usize)
        .set_max_array_size(l.max_array_len as usize)
        .set_max_map_size(l.max_map_len as usize);
    e
}

/// The naive model: a fresh process per request (fork + exec of `picloud`, load the module,
/// instantiate, run).
fn fork_exec(picloud: &Path, cache: &Path, n: usize) -> Result<serde_json::Value> {
    let script = std::env::temp_dir().join("picloud-bench-hello.rhai");
    std::fs::write(&script, HELLO)?;
    let mut micros = Vec::new();
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let out = std::process::Command::new(picloud)
            .arg("__invoke-once")
            .arg(&script)
            .arg("--cache-dir")
            .arg(cache)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "fresh worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        micros.push(t.elapsed().as_micros() as u64);
    }
    Ok(stats(micros, started.elapsed(), 0))
}

/// The same sandbox without pre-warming: per request, exec a zygote (load the module, enter
/// the namespaces), fork one worker, sandbox it, invoke, tear down.
async fn fresh_pool_per_request(mut config: ExecutorConfig, n: usize) -> Result<serde_json::Value> {
    config.process.min_warm = 1;
    config.process.max_warm = 1;
    let mut micros = Vec::new();
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let ex = Executor::start(config.clone()).await?;
        let r = ex
            .invoke(HELLO, &InvocationRequest::get("/"), &Limits::default())
            .await;
        anyhow::ensure!(r.outcome.is_ok(), "{:?}", r.outcome);
        drop(ex);
        micros.push(t.elapsed().as_micros() as u64);
    }
    Ok(stats(micros, started.elapsed(), 0))
}

/// How fast the zygote fills a pool: time from start until `n` workers are warm.
async fn refill_rate(mut config: ExecutorConfig, n: usize) -> Result<serde_json::Value> {
    config.process.min_warm = n;
    config.process.max_warm = n;
    let started = Instant::now();
    let ex = Executor::start(config).await?;
    let ready = started.elapsed();
    while ex.stats().warm < n {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let filled = started.elapsed() - ready;
    Ok(json!({
        "workers": n,
        "fill_ms": filled.as_secs_f64() * 1000.0,
        "workers_per_second": n as f64 / filled.as_secs_f64(),
        "zygote_start_ms": ready.as_secs_f64() * 1000.0,
    }))
}

const COMPUTE: [(&str, &str); 4] = [
    (
        "loop 1,000,000",
        "fn handle(req) { let s = 0; for i in 0..1000000 { s += i; } s }",
    ),
    (
        "fib(25)",
        "fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } } fn handle(req) { fib(25) }",
    ),
    (
        "primes < 30,000",
        "fn handle(req) { let c = 0; for n in 2..30000 { let p = true; let d = 2; while d * d <= n { if n % d == 0 { p = false; break; } d += 1; } if p { c += 1; } } c }",
    ),
    (
        "matrix 24x24 multiply",
        "fn handle(req) { let n = 24; let a = []; let b = []; for i in 0..n { let ra = []; let rb = []; for j in 0..n { ra.push(i + j); rb.push(i - j); } a.push(ra); b.push(rb); } let t = 0; for i in 0..n { for j in 0..n { let s = 0; for k in 0..n { s += a[i][k] * b[k][j]; } t += s; } } t }",
    ),
];

fn compute_limits() -> Limits {
    let mut l = Limits {
        fuel: u64::MAX / 4,
        timeout_ms: 120_000,
        ..Limits::default()
    };
    l.script.max_operations = 0;
    l
}

/// Median wall time of `reps` runs in the guest (instance mode), and the fuel one run used.
async fn time_guest(ex: &Executor, script: &str, reps: usize) -> Result<(f64, u64)> {
    let mut times = Vec::new();
    let mut fuel = 0;
    for _ in 0..reps {
        let r = ex
            .invoke(script, &InvocationRequest::get("/"), &compute_limits())
            .await;
        anyhow::ensure!(r.outcome.is_ok(), "{script}: {:?}", r.outcome);
        times.push(r.duration_us as f64 / 1000.0);
        fuel = r.fuel_used;
    }
    times.sort_by(f64::total_cmp);
    Ok((times[reps / 2], fuel))
}

fn time_native(script: &str, reps: usize) -> Result<f64> {
    let engine = native_engine();
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let ast = engine.compile(script).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut scope = rhai::Scope::new();
        let out: rhai::Dynamic = engine
            .call_fn(
                &mut scope,
                &ast,
                "handle",
                (rhai::Dynamic::from_map(rhai::Map::new()),),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = std::hint::black_box(out);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[reps / 2])
}

/// `(rss_kib, private_kib)` from /proc/PID/smaps_rollup.
fn smaps(pid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some((
        field("Rss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    ))
}

async fn memory(mut config: ExecutorConfig) -> Result<serde_json::Value> {
    config.process.min_warm = 2;
    let ex = Executor::start(config).await?;
    while ex.stats().warm < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let zygote = ex.zygote_pid().context("zygote pid")?;
    let worker = children(zygote)
        .into_iter()
        .next()
        .context("a warm worker")?;
    let (z_rss, z_private) = smaps(zygote).context("zygote smaps")?;
    let (w_rss, w_private) = smaps(worker).context("worker smaps")?;
    let (s_rss, s_private) = smaps(std::process::id() as i32).context("own smaps")?;
    Ok(json!({
        "zygote_rss_kib": z_rss, "zygote_private_kib": z_private,
        "worker_rss_kib": w_rss, "worker_private_kib": w_private,
        "bench_process_rss_kib": s_rss, "bench_process_private_kib": s_private,
    }))
}

fn children(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

/// The generated section of docs/performance.md.
fn render(r: &serde_json::Value) -> String {
    let m = &r["machine"];
    let mut s = String::new();
    s += &format!(
        "Measured {} on {} ({} cores, Linux {}), release build. The load generator runs in the \
         benchmark process and shares the cores with the executor and its workers.\n\n",
        m["date"].as_str().unwrap_or(""),
        m["cpu"].as_str().unwrap_or(""),
        m["cores"],
        m["kernel"].as_str().unwrap_or("")
    );
    s += "### Hello-world invocation (executor API, no HTTP)\n\n";
    s += "| runs in | clients | invocations/s | p50 ms | p99 ms | vs native Rhai (p50) |\n|---|---|---|---|---|---|\n";
    for clients in [1, 2] {
        let rows: Vec<&serde_json::Value> = r["hello"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["clients"] == clients)
            .collect();
        let native_p50 = rows
            .iter()
            .find(|h| h["what"].as_str().is_some_and(|w| w.starts_with("native")))
            .map_or(f64::NAN, |h| f(&h["stats"], "p50_ms"));
        for h in rows {
            let st = &h["stats"];
            s += &format!(
                "| {} | {} | {:.0} | {:.3} | {:.3} | {:.1}× |\n",
                h["what"].as_str().unwrap_or(""),
                clients,
                f(st, "per_second"),
                f(st, "p50_ms"),
                f(st, "p99_ms"),
                f(st, "p50_ms") / native_p50
            );
        }
    }
    let p = &r["pool"];
    let warm = f(&p["warm"], "p50_ms");
    let fresh = f(&p["fork_exec"], "p50_ms");
    s += "\n### Warm worker vs a fresh process per request\n\n";
    s += "| model | p50 ms | p99 ms |\n|---|---|---|\n";
    s += &format!(
        "| warm pooled worker (process mode, 1 client) | {warm:.3} | {:.3} |\n",
        f(&p["warm"], "p99_ms")
    );
    s += &format!(
        "| fork + exec `picloud __invoke-once` (baseline) | {fresh:.3} | {:.3} |\n",
        f(&p["fork_exec"], "p99_ms")
    );
    let sandboxed = f(&p["fresh_sandboxed"], "p50_ms");
    s += &format!(
        "| a fresh zygote + sandboxed worker per request (same sandbox, no pool; baseline) | {sandboxed:.3} | {:.3} |\n",
        f(&p["fresh_sandboxed"], "p99_ms")
    );
    s += &format!(
        "\nThe warm worker is **{:.1}× faster** than a bare fork+exec runner and **{:.1}× faster** than \
         starting the same sandbox per request. ",
        fresh / warm,
        sandboxed / warm
    );
    s += &format!(
        "Refill: the zygote made {} warm workers in {:.1} ms (**{:.0} workers/s**); the zygote itself \
         started in {:.1} ms (module cache already filled).\n",
        p["refill"]["workers"],
        f(&p["refill"], "fill_ms"),
        f(&p["refill"], "workers_per_second"),
        f(&p["refill"], "zygote_start_ms")
    );
    s += "\n### Compute: the guest (instance mode, with fuel) vs native Rhai in the same process\n\n";
    s += "| script | guest ms | native ms | guest / native | without fuel: ms, ratio | fuel |\n|---|---|---|---|---|---|\n";
    for c in r["compute"].as_array().into_iter().flatten() {
        s += &format!(
            "| {} | {:.1} | {:.1} | **{:.2}×** | {:.1}, {:.2}× | {} |\n",
            c["script"].as_str().unwrap_or(""),
            f(c, "guest_ms"),
            f(c, "native_ms"),
            f(c, "ratio"),
            f(c, "guest_no_fuel_ms"),
            f(c, "ratio_no_fuel"),
            c["fuel"]
        );
    }
    let mem = &r["memory"];
    s += "\n### Memory (from /proc/PID/smaps_rollup)\n\n| process | RSS | private |\n|---|---|---|\n";
    for (name, key) in [
        ("zygote", "zygote"),
        ("warm worker", "worker"),
        (
            "benchmark process (baseline: the host with engine and pools)",
            "bench_process",
        ),
    ] {
        s += &format!(
            "| {name} | {:.1} MiB | {:.1} MiB |\n",
            f(mem, &format!("{key}_rss_kib")) / 1024.0,
            f(mem, &format!("{key}_private_kib")) / 1024.0
        );
    }
    s
}
