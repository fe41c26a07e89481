//! `picloud-soak`: normal and hostile tenants on one `picloud serve` for a bounded time (issue
//! 9). Normal tenants answer small requests; hostile ones loop forever, build memory bombs,
//! recurse without end, flood their logs, send huge responses, hammer past their rate limit and
//! spam the key-value store. The run fails (exit status 1, each failure named) when:
//!
//! - any answer is not an outcome expected of its tenant (a 500 without a typed kind, an
//!   `internal` or `worker_crashed`, a refused connection, a normal tenant's error);
//! - the invocation records disagree with what the clients saw (per function and outcome), or
//!   any record was dropped;
//! - the server's descriptors, threads or memory grew from before the mix to after it, both
//!   taken at rest (see [`at_rest`]), or any zombie is left;
//! - the server's log shows a panic.
//!
//! It reports the quiet tenant's p50/p99 alone and in the mix. `scripts/soak` runs it for ten
//! minutes on a release build and publishes the report (`--publish`: `benches/results/soak.json`
//! and its section of `docs/performance.md`); `tests/soak.rs` runs a short one on every CI run.
//! Loopback only; every phase is bounded in time and the run stops by itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

mod doc;
mod harness;

use harness::{ADMIN, deploy, flag, serve_logged};

/// One function of the mix: who sends what, how fast, and which outcomes are allowed. A
/// hostile function may always end in `timeout` too: on two shared cores, a script that burns
/// CPU can meet its 1 s deadline before its own limit.
struct Load {
    tenant: &'static str,
    function: &'static str,
    script: &'static str,
    limits: Value,
    /// Client threads sending one request at a time.
    clients: usize,
    /// Pause between one client's requests (none: as fast as answers come).
    pace: Option<Duration>,
    /// The kinds an answer may have (`ok`, `rate_limited` for a 429, or an error's kind).
    expect: &'static [&'static str],
    method: &'static str,
}

const QUIET: &str = "quiet";

fn mix() -> Vec<Load> {
    let hostile = Some(Duration::from_millis(200));
    let short = json!({ "timeout_ms": 1000 });
    vec![
        Load {
            tenant: QUIET,
            function: "hello",
            script: r#"fn handle(req) { `hello ${req.query.name ?? "world"}` }"#,
            limits: json!({}),
            clients: 1,
            pace: Some(Duration::from_millis(20)),
            expect: &["ok"],
            method: "GET",
        },
        Load {
            tenant: "steady",
            function: "counter",
            script: r#"fn handle(req) {
                let n = kv_get("n") ?? 0;
                kv_set("n", n + 1);
                #{ count: n, echo: req.json }
            }"#,
            limits: json!({}),
            clients: 1,
            pace: Some(Duration::from_millis(50)),
            expect: &["ok"],
            method: "POST",
        },
        Load {
            tenant: "looper",
            function: "spin",
            script: "fn handle(req) { loop {} }",
            limits: short.clone(),
            clients: 1,
            pace: hostile,
            expect: &["timeout", "fuel_exhausted", "script_error"],
            method: "GET",
        },
        Load {
            tenant: "bomber",
            function: "strings",
            script: r#"fn handle(req) { let s = "xxxxxxxx"; loop { s += s; } }"#,
            limits: short.clone(),
            clients: 1,
            pace: hostile,
            expect: &["memory_limit", "script_error", "timeout"],
            method: "GET",
        },
        Load {
            tenant: "bomber",
            function: "arrays",
            script: "fn handle(req) { let a = [1, 2, 3, 4]; loop { a += a; } }",
            limits: json!({ "timeout_ms": 1000, "memory_bytes": 16 << 20 }),
            clients: 1,
            pace: hostile,
            expect: &["memory_limit", "script_error", "timeout"],
            method: "GET",
        },
        Load {
            tenant: "recurser",
            function: "deep",
            script: "fn f(n) { f(n + 1) } fn handle(req) { f(0) }",
            limits: short.clone(),
            clients: 1,
            pace: hostile,
            expect: &["script_error", "stack_overflow", "timeout"],
            method: "GET",
        },
        Load {
            tenant: "logger",
            function: "flood",
            script: r#"fn handle(req) { for i in 0..20000 { print(`line ${i} of a flood of logs`) } "logged" }"#,
            limits: short.clone(),
            clients: 1,
            pace: hostile,
            expect: &["ok", "timeout"],
            method: "GET",
        },
        Load {
            tenant: "shouter",
            function: "huge",
            script: r#"fn handle(req) { let s = "0123456789abcdef"; while s.len() < 2000000 { s += s; } s }"#,
            limits: short.clone(),
            clients: 1,
            pace: hostile,
            expect: &["ok", "timeout"],
            method: "GET",
        },
        Load {
            tenant: "flooder",
            function: "fast",
            script: r#"fn handle(req) { "fast" }"#,
            limits: json!({}),
            clients: 2,
            pace: None,
            expect: &["ok", "rate_limited"],
            method: "GET",
        },
        Load {
            tenant: "hoarder",
            function: "kv",
            script: r#"fn handle(req) {
                let v = "0123456789";
                for i in 0..6 { v += v; }
                for i in 0..50 { kv_set(`k-${random()}`, v); }
                "stored"
            }"#,
            limits: short,
            clients: 1,
            pace: hostile,
            expect: &["ok", "script_error", "timeout"],
            method: "POST",
        },
    ]
}

/// What the clients of one function saw.
#[derive(Default)]
struct Seen {
    kinds: BTreeMap<String, u64>,
    /// Latencies of `ok` answers, ms (kept for the quiet tenant only).
    latencies: Vec<f64>,
}

/// The kind of an answer: `ok`, `rate_limited`, the error body's kind, or `http_{status}`.
fn kind_of(status: u16, body: &str) -> String {
    match status {
        200 => "ok".into(),
        429 => "rate_limited".into(),
        _ => serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["error"]["kind"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("http_{status}")),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Sends `load`'s requests until `stop`.
fn drive(port: u16, load: &Load, stop: &AtomicBool, keep_latencies: bool) -> Seen {
    let url = format!(
        "http://127.0.0.1:{port}/fn/{}/{}?name=soak",
        load.tenant, load.function
    );
    let agent = agent();
    let mut seen = Seen::default();
    let mut next = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let answer = if load.method == "POST" {
            agent
                .post(&url)
                .send_json(json!({ "n": n, "pad": "p".repeat(256) }))
        } else {
            agent.get(&url).call()
        };
        n += 1;
        let kind = match answer {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let body = r
                    .body_mut()
                    .with_config()
                    .limit(16 << 20)
                    .read_to_string()
                    .unwrap_or_default();
                kind_of(status, &body)
            }
            Err(e) => format!("transport: {e}"),
        };
        if keep_latencies && kind == "ok" {
            seen.latencies
                .push(started.elapsed().as_secs_f64() * 1000.0);
        }
        *seen.kinds.entry(kind).or_default() += 1;
        if let Some(pace) = load.pace {
            next += pace;
            match next.checked_duration_since(Instant::now()) {
                Some(wait) => std::thread::sleep(wait),
                None => next = Instant::now(),
            }
        }
    }
    seen
}

/// The server process and its descendants (zygote, workers) as `/proc` shows them.
#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    at_s: f64,
    when: &'static str,
    rss_kib: u64,
    /// The server's RSS by kind: its heap and stacks (anonymous), mapped files (the binary,
    /// libraries), shared memory (SQLite's WAL index), so that growth shows its source.
    rss_anon_kib: u64,
    rss_file_kib: u64,
    rss_shmem_kib: u64,
    /// The server and every descendant.
    tree_rss_kib: u64,
    fds: u64,
    /// The descriptors by what they are: `socket`, `pipe`, `anon_inode:[pidfd]`, or a file's
    /// name; so that a failed check says what grew.
    fd_kinds: BTreeMap<String, u64>,
    threads: u64,
    descendants: u64,
    zombies: u64,
}

/// The server's descriptors by kind.
fn fd_kinds(pid: i32) -> BTreeMap<String, u64> {
    let mut kinds = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return kinds;
    };
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed since the listing
        };
        let target = target.to_string_lossy();
        let kind = match target.split_once(":[") {
            Some((kind, _)) if !target.starts_with('/') => kind.to_string(),
            _ if target.starts_with("anon_inode:") => target.to_string(),
            _ => target.rsplit('/').next().unwrap_or(&target).to_string(),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

/// The pool's floor: `picloud serve` keeps this many warm workers when idle (the executor's
/// default `min_warm`).
const POOL_FLOOR: u64 = 2;

/// Waits until the server is at rest, then samples it: no worker busy, no record queued, and
/// the pool shrunk back to its floor (the zygote and [`POOL_FLOOR`] workers), twice a second
/// apart. The pool stays grown for 30 s after its last miss, and under load its size sets
/// the descriptor count (two per worker), so only samples at rest can show a leak. Fails
/// after 120 s.
fn at_rest(port: u16, pid: i32, started: Instant, when: &'static str) -> Result<Sample> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut calm = 0;
    loop {
        let [busy, queued] = metrics(
            port,
            ["picloud_pool_busy_workers ", "picloud_records_queued "],
        )?;
        let s = sample(pid, started, when);
        if busy == 0.0 && queued == 0.0 && s.descendants <= 1 + POOL_FLOOR {
            calm += 1;
            if calm == 2 {
                return Ok(s);
            }
        } else {
            calm = 0;
        }
        if Instant::now() > deadline {
            bail!(
                "the server did not come to rest within 120 s ({when}): {busy} workers busy, \
                 {queued} records queued, {} descendants",
                s.descendants
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn status_field(pid: i32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Every process as (pid, parent, state).
fn processes() -> Vec<(i32, i32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The name is in parentheses and may hold spaces: fields follow the last ')'.
        let mut rest = stat.get(stat.rfind(')')? + 2..)?.split(' ');
        let state = rest.next()?.chars().next()?;
        let parent = rest.next()?.parse().ok()?;
        Some((pid, parent, state))
    })
    .collect()
}

fn sample(pid: i32, started: Instant, when: &'static str) -> Sample {
    let all = processes();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(all.iter().filter(|p| p.1 == parent).map(|p| p.0));
        i += 1;
    }
    let descendants: Vec<_> = all.iter().filter(|p| tree[1..].contains(&p.0)).collect();
    let kinds = fd_kinds(pid);
    Sample {
        at_s: started.elapsed().as_secs_f64(),
        when,
        rss_kib: status_field(pid, "VmRSS:"),
        rss_anon_kib: status_field(pid, "RssAnon:"),
        rss_file_kib: status_field(pid, "RssFile:"),
        rss_shmem_kib: status_field(pid, "RssShmem:"),
        tree_rss_kib: tree.iter().map(|&p| status_field(p, "VmRSS:")).sum(),
        fds: kinds.values().sum(),
        fd_kinds: kinds,
        threads: status_field(pid, "Threads:"),
        descendants: descendants.len() as u64,
        zombies: descendants.iter().filter(|p| p.2 == 'Z').count() as u64,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn latency(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    json!({
        "requests": samples.len(),
        "p50_ms": percentile(&samples, 0.50),
        "p99_ms": percentile(&samples, 0.99),
    })
}

/// A function's records by outcome, from the API.
fn recorded(
    port: u16,
    tenant: &str,
    function: &str,
    minutes: u64,
) -> Result<BTreeMap<String, u64>> {
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/tenants/{tenant}/functions/{function}/stats?minutes={minutes}&buckets=1"
    );
    let mut r = agent()
        .get(&url)
        .header("Authorization", &format!("Bearer {ADMIN}"))
        .call()?;
    let stats: Value = r.body_mut().read_json()?;
    serde_json::from_value(stats["by_outcome"].clone()).context("stats.by_outcome")
}

fn metric(port: u16, name: &str) -> Result<f64> {
    let [value] = metrics(port, [name])?;
    Ok(value)
}

/// Several series from one scrape of `/metrics`.
fn metrics<const N: usize>(port: u16, names: [&str; N]) -> Result<[f64; N]> {
    let text = agent()
        .get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()?
        .body_mut()
        .read_to_string()?;
    let mut out = [0.0; N];
    for (value, name) in out.iter_mut().zip(names) {
        *value = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .with_context(|| format!("{name} in /metrics"))?;
    }
    Ok(out)
}

/// Runs one phase: every load in `loads` for `seconds`; returns what each saw, by index.
fn phase(port: u16, loads: &Arc<Vec<Load>>, which: &[usize], seconds: u64) -> Result<Vec<Seen>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for &i in which {
        for _ in 0..loads[i].clients {
            let (loads, stop) = (loads.clone(), stop.clone());
            threads.push((
                i,
                std::thread::spawn(move || drive(port, &loads[i], &stop, loads[i].tenant == QUIET)),
            ));
        }
    }
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut seen: Vec<Seen> = (0..loads.len()).map(|_| Seen::default()).collect();
    for (i, t) in threads {
        let s = t
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        for (k, n) in s.kinds {
            *seen[i].kinds.entry(k).or_default() += n;
        }
        seen[i].latencies.extend(s.latencies);
    }
    Ok(seen)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds = flag(&args, "--seconds").unwrap_or(600);
    let publish = args.iter().any(|a| a == "--publish");
    let harness::Paths {
        root,
        exe_dir,
        picloud,
    } = harness::paths()?;
    let work = exe_dir.join("soak");
    let report = run(&picloud, &work, seconds)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    let failures: Vec<String> = serde_json::from_value(report["failures"].clone())?;
    if publish {
        doc::publish(&root, "soak", &report, &render(&report))?;
    }
    if !failures.is_empty() {
        bail!("the soak failed:\n- {}", failures.join("\n- "));
    }
    Ok(())
}

fn run(picloud: &Path, work: &Path, seconds: u64) -> Result<Value> {
    let solo_seconds = (seconds / 10).clamp(10, 60);
    let log = work.with_extension("log");
    std::fs::create_dir_all(work.parent().context("work directory")?)?;
    let stderr = std::fs::File::create(&log)?;
    let (server, port) = serve_logged(
        picloud,
        work,
        "process",
        &[
            "--function-rate",
            "100",
            "--tenant-rate",
            "200",
            "--records-per-function",
            "10000000",
            "--kv-max-keys",
            "500",
        ],
        stderr,
    )?;
    let pid = server.0.id() as i32;
    let loads = Arc::new(mix());
    for l in loads.iter() {
        deploy(port, l.tenant, l.function, l.script, l.limits.clone())?;
    }
    let started = Instant::now();
    let quiet = [0];
    let everyone: Vec<usize> = (0..loads.len()).collect();

    eprintln!("soak: warm-up, then the quiet tenant alone for {solo_seconds} s");
    let warm = phase(port, &loads, &everyone, 5)?;
    let solo = phase(port, &loads, &quiet, solo_seconds)?;
    let before = at_rest(port, pid, started, "at rest, before the mix")?;

    eprintln!("soak: every tenant for {seconds} s");
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = sampler_stop.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let every = Duration::from_secs((seconds / 10).max(5));
            let mut next = Instant::now() + every;
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    out.push(sample(pid, started, "in the mix"));
                    next += every;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            out
        })
    };
    let mixed = phase(port, &loads, &everyone, seconds)?;
    sampler_stop.store(true, Ordering::Relaxed);
    let mut samples = vec![before.clone()];
    samples.extend(
        sampler
            .join()
            .map_err(|_| anyhow::anyhow!("the sampler panicked"))?,
    );
    let after = at_rest(port, pid, started, "at rest, after the mix")?;
    samples.push(after.clone());

    let mut failures = Vec::new();
    let minutes = seconds / 60 + 10;
    let (mut invoked_total, mut recorded_total) = (0u64, 0u64);
    let mut functions = Vec::new();
    for (i, l) in loads.iter().enumerate() {
        // Every answer was one its tenant may get.
        let mut answers = mixed[i].kinds.clone();
        for seen in [&warm[i], &solo[i]] {
            for (k, n) in &seen.kinds {
                *answers.entry(k.clone()).or_default() += n;
            }
        }
        for (kind, n) in &answers {
            if !l.expect.contains(&kind.as_str()) {
                failures.push(format!(
                    "{}/{} answered {kind} ({n} times); allowed: {:?}",
                    l.tenant, l.function, l.expect
                ));
            }
        }
        // Every invocation that ran (all but the 429s) has its record, with the same outcome.
        let mut invoked = answers.clone();
        invoked.remove("rate_limited");
        let records = recorded(port, l.tenant, l.function, minutes)?;
        if records != invoked {
            failures.push(format!(
                "{}/{}: records {records:?} != invocations {invoked:?}",
                l.tenant, l.function
            ));
        }
        invoked_total += invoked.values().sum::<u64>();
        recorded_total += records.values().sum::<u64>();
        functions.push(json!({
            "function": format!("{}/{}", l.tenant, l.function),
            "answers": answers,
            "records": records,
        }));
    }
    let dropped = metric(port, "picloud_records_dropped_total ")?;
    if dropped != 0.0 {
        failures.push(format!("{dropped} records dropped"));
    }
    // Resources: after the mix no higher than before it, both at rest. Slack: SQLite's pool
    // may open its last connections (up to 4, each a descriptor or two and a thread) only in
    // the mix.
    if after.zombies != 0 {
        failures.push(format!("{} zombies left", after.zombies));
    }
    if after.fds > before.fds + 8 {
        failures.push(format!(
            "descriptors grew at rest: {} {:?} → {} {:?}",
            before.fds, before.fd_kinds, after.fds, after.fd_kinds
        ));
    }
    if after.threads > before.threads + 8 {
        failures.push(format!(
            "threads grew at rest: {} → {}",
            before.threads, after.threads
        ));
    }
    if after.rss_kib > before.rss_kib + before.rss_kib / 4 + 16 * 1024 {
        failures.push(format!(
            "the server's memory grew at rest: {} → {} KiB",
            before.rss_kib, after.rss_kib
        ));
    }
    drop(server);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let panics = log_text.lines().filter(|l| l.contains("panicked")).count();
    if panics > 0 {
        failures.push(format!("{panics} panics in {}", log.display()));
    }
    let log_errors = log_text.lines().filter(|l| l.contains(" ERROR ")).count();

    let solo_quiet = latency(solo[0].latencies.clone());
    let mixed_quiet = latency(mixed[0].latencies.clone());
    let ratio = |p: &str| {
        mixed_quiet[p].as_f64().unwrap_or(f64::NAN) / solo_quiet[p].as_f64().unwrap_or(f64::NAN)
    };
    Ok(json!({
        "machine": harness::machine(),
        "seconds": seconds,
        "solo_seconds": solo_seconds,
        "quiet_solo": solo_quiet,
        "quiet_mixed": mixed_quiet,
        "p50_ratio": ratio("p50_ms"),
        "p99_ratio": ratio("p99_ms"),
        "functions": functions,
        "invocations": invoked_total,
        "records": recorded_total,
        "records_dropped": dropped,
        "samples": samples,
        "server_log_errors": log_errors,
        "failures": failures,
    }))
}

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn render(r: &Value) -> String {
    let mut out = format!(
        "### Soak: normal and hostile tenants together (`scripts/soak`)\n\n\
         {} s of every tenant at once on one `picloud serve` (process isolation, SQLite), after \
         the quiet tenant alone for {} s. Hostile tenants each send a request every 200 ms: an \
         endless loop, string and array bombs, endless recursion, 20,000 log lines, a 2 MiB \
         response, key-value spam into a 500-key quota; a flooder hammers a function past its \
         100 requests/s limit from two clients. The quiet tenant sends a hello-world request \
         every 20 ms, a steady one a key-value counter every 50 ms. Measured on {} ({} cores), \
         {}.\n\n\
         | quiet tenant | requests | p50 ms | p99 ms |\n|---|---|---|---|\n\
         | alone | {} | {:.2} | {:.2} |\n| in the mix | {} | {:.2} | {:.2} |\n\
         | ratio | | **{:.2}** | **{:.2}** |\n\n",
        r["seconds"],
        r["solo_seconds"],
        r["machine"]["cpu"].as_str().unwrap_or("?"),
        r["machine"]["cores"],
        r["machine"]["date"].as_str().unwrap_or("?"),
        r["quiet_solo"]["requests"],
        n(&r["quiet_solo"]["p50_ms"]),
        n(&r["quiet_solo"]["p99_ms"]),
        r["quiet_mixed"]["requests"],
        n(&r["quiet_mixed"]["p50_ms"]),
        n(&r["quiet_mixed"]["p99_ms"]),
        n(&r["p50_ratio"]),
        n(&r["p99_ratio"]),
    );
    out += "| function | answers | records |\n|---|---|---|\n";
    let compact = |v: &Value| {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    for f in r["functions"].as_array().into_iter().flatten() {
        out += &format!(
            "| {} | {} | {} |\n",
            f["function"].as_str().unwrap_or("?"),
            compact(&f["answers"]),
            compact(&f["records"])
        );
    }
    out += &format!(
        "\n{} invocations, {} records, {} dropped; {} error lines in the server's log.\n\n\
         | the server at | | RSS MiB | of it heap | with zygote and workers MiB | descriptors | threads | descendants | zombies |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        r["invocations"], r["records"], r["records_dropped"], r["server_log_errors"]
    );
    for s in r["samples"].as_array().into_iter().flatten() {
        out += &format!(
            "| {:.0} s | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |\n",
            n(&s["at_s"]),
            s["when"].as_str().unwrap_or("?"),
            n(&s["rss_kib"]) / 1024.0,
            n(&s["rss_anon_kib"]) / 1024.0,
            n(&s["tree_rss_kib"]) / 1024.0,
            s["fds"],
            s["threads"],
            s["descendants"],
            s["zombies"]
        );
    }
    let failures = r["failures"].as_array().map_or(0, Vec::len);
    out += &format!(
        "\nAt rest: no worker busy, no record queued, the pool back at its floor (it stays \
         grown for 30 s after its last miss). Checks failed: {failures} (the run fails on any \
         answer its tenant should not get, records that differ from the answers, a dropped \
         record, more descriptors, threads or memory at rest after the mix than before it, a \
         zombie, or a panic).\n"
    );
    out
}
