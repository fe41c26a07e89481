//! `picloud-fairness-bench`: a noisy tenant saturates its function while a quiet tenant's
//! requests are timed, against the quiet tenant alone in the same run (issue 4: the quiet p99
//! must stay within 2× of its solo p99). Both isolation modes, the server's default limits.
//! Results go to `benches/results/fairness.json` and the generated section of
//! `docs/performance.md`.
//!
//! Run with `scripts/bench-fairness [--seconds N]` (default 20 per phase). Loopback only; every
//! phase is bounded in time. The load generator shares the server's two cores.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

mod doc;
mod harness;

use harness::{deploy, deploy_with, flag, serve, wrk, wrk_scripted};

const QUIET: &str = r#"fn handle(req) { `hello ${req.query.name ?? "world"}` }"#;
/// A few milliseconds of pure computation per request.
const NOISY: &str = r#"fn handle(req) { let n = 0; while n < 20000 { n += 1; } "busy" }"#;
/// The quiet tenant's pace: one request every 10 ms, one at a time.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Connections the noisy tenant keeps busy (its default limits admit 16 at once).
const NOISY_CONNECTIONS: u32 = 64;
/// A wrk script: every request to the private function carries a new random token.
const FORGED_TOKENS: &str = r#"math.randomseed(os.time())
request = function()
  local token = string.format("pc_%08x%08x%08x", math.random(0, 2147483647),
    math.random(0, 2147483647), math.random(0, 2147483647))
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. token })
end
"#;
/// Connections sending forged tokens.
const FORGED_CONNECTIONS: u32 = 32;
/// The forged floods: at the target's rate (each connection waits this many ms between its
/// requests: 32 connections, each a request per 5 ms and its round trip, a little over 5,000
/// requests/s), and as fast as wrk can.
const FORGED_PACES: [(&str, Option<u32>); 2] = [("5000", Some(5)), ("flood", None)];

/// Latencies (ms) of sequential GETs of `url` every [`PROBE_INTERVAL`] for `seconds`, and how
/// many were not 200.
fn probe(url: &str, seconds: u64) -> Result<(Vec<f64>, u64)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let end = Instant::now() + Duration::from_secs(seconds);
    let (mut samples, mut failed) = (Vec::new(), 0);
    let mut next = Instant::now();
    while Instant::now() < end {
        let started = Instant::now();
        let mut r = agent
            .get(url)
            .call()
            .context("the quiet tenant's request")?;
        let _ = r.body_mut().read_to_string();
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        if r.status() != 200 {
            failed += 1;
        }
        next += PROBE_INTERVAL;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else {
            next = Instant::now();
        }
    }
    Ok((samples, failed))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn summary(mut samples: Vec<f64>, failed: u64) -> Value {
    samples.sort_by(f64::total_cmp);
    json!({
        "requests": samples.len(), "not_200": failed,
        "p50_ms": percentile(&samples, 0.50), "p99_ms": percentile(&samples, 0.99),
        "max_ms": samples.last().copied().unwrap_or(f64::NAN),
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds = flag(&args, "--seconds").unwrap_or(20);
    let harness::Paths {
        root,
        exe_dir,
        picloud,
    } = harness::paths()?;
    let work = exe_dir.join("fairness-bench");

    let mut report = BTreeMap::new();
    for isolation in ["process", "instance"] {
        let (server, port) = serve(&picloud, &work.join(isolation), isolation, &[])?;
        deploy(port, "quiet", "hello", QUIET, json!({}))?;
        deploy(port, "noisy", "work", NOISY, json!({}))?;
        let quiet_url = format!("http://127.0.0.1:{port}/fn/quiet/hello");
        let noisy_url = format!("http://127.0.0.1:{port}/fn/noisy/work");
        probe(&quiet_url, 2)?; // warm-up
        let (solo, solo_failed) = probe(&quiet_url, seconds)?;
        let noise = std::thread::spawn(move || wrk(&noisy_url, 1, NOISY_CONNECTIONS, seconds + 4));
        std::thread::sleep(Duration::from_secs(2));
        let (loaded, loaded_failed) = probe(&quiet_url, seconds)?;
        let noisy = noise
            .join()
            .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
        // Forged tokens against another tenant's private function, a new one per request: the
        // function's rate turns most away before the token check, and the check itself is a
        // lookup in memory (issue 18: no query per request).
        deploy_with(port, "locked", "private", QUIET, json!({ "public": false }))?;
        let locked_url = format!("http://127.0.0.1:{port}/fn/locked/private");
        let mut forged = serde_json::Map::new();
        for (pace, delay_ms) in FORGED_PACES {
            let script = work.join(format!("{isolation}-forged-{pace}.lua"));
            let delay = delay_ms
                .map(|ms| format!("delay = function() return {ms} end\n"))
                .unwrap_or_default();
            std::fs::write(&script, format!("{FORGED_TOKENS}{delay}"))?;
            let url = locked_url.clone();
            let flood = std::thread::spawn(move || {
                wrk_scripted(&url, 1, FORGED_CONNECTIONS, seconds + 4, Some(&script))
            });
            std::thread::sleep(Duration::from_secs(2));
            let (quiet, failed) = probe(&quiet_url, seconds)?;
            let flood = flood
                .join()
                .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
            forged.insert(
                pace.to_string(),
                json!({ "quiet": summary(quiet, failed), "flood": flood }),
            );
        }
        drop(server);
        let solo = summary(solo, solo_failed);
        let loaded = summary(loaded, loaded_failed);
        let p99 = |v: &Value| v["p99_ms"].as_f64().unwrap_or(f64::NAN);
        let ratio = p99(&loaded) / p99(&solo);
        for entry in forged.values_mut() {
            let r = p99(&entry["quiet"]) / p99(&solo);
            entry["p99_ratio"] = json!(r);
        }
        eprintln!(
            "{isolation}: quiet p99 solo {} ms, under noise {} ms (×{ratio:.2}); beside forged tokens: {}",
            solo["p99_ms"],
            loaded["p99_ms"],
            forged
                .iter()
                .map(|(pace, e)| format!(
                    "{pace}: {:.0}/s {} ms (×{:.2})",
                    n(&e["flood"]["rps"]),
                    e["quiet"]["p99_ms"],
                    n(&e["p99_ratio"])
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        report.insert(
            isolation,
            json!({ "quiet_solo": solo, "quiet_loaded": loaded, "p99_ratio": ratio, "noisy": noisy,
                    "forged": forged }),
        );
    }
    let report = json!(report);
    doc::publish(&root, "fairness", &report, &render(&report, seconds))
}

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn render(r: &Value, seconds: u64) -> String {
    let mut out = format!(
        "### Fairness: a noisy tenant next to a quiet one (`scripts/bench-fairness`)\n\n\
         The quiet tenant sends one hello-world request every {} ms, one at a time, for {seconds} s \
         alone, then for {seconds} s while the noisy tenant keeps {NOISY_CONNECTIONS} connections \
         busy (`wrk`) on a function that computes for a few milliseconds. The server runs with its \
         default limits (per function 16 at once, per tenant 32, 1,000 and 2,000 requests/s), so \
         most of the noisy tenant's requests are refused with 429, as they should be. Target: the \
         quiet p99 under noise within 2× of its solo p99.\n\n\
         | isolation | quiet solo p50 / p99 ms | quiet under noise p50 / p99 ms | p99 ratio | noisy answers/s (all statuses) | noisy non-200 |\n\
         |---|---|---|---|---|---|\n",
        PROBE_INTERVAL.as_millis()
    );
    let mut forged = format!(
        "\nBeside forged tokens: {FORGED_CONNECTIONS} connections (`wrk` with a script) call \
         another tenant's private function, each request with a new random token, while the \
         quiet tenant is timed as above: paced to about 5,000 requests/s (the target's load), \
         then as fast as `wrk` can. Rates are checked before tokens, and tokens are looked up in \
         memory: no request of the flood reaches the database. Target: the quiet p99 within 2× \
         of solo at 5,000 forged requests/s.\n\n\
         | isolation | forged requests/s (all 401 or 429) | quiet beside them p50 / p99 ms | p99 ratio |\n\
         |---|---|---|---|\n"
    );
    for isolation in ["process", "instance"] {
        for (pace, _) in FORGED_PACES {
            let e = &r[isolation]["forged"][pace];
            forged += &format!(
                "| {isolation} | {:.0} | {:.2} / {:.2} | **{:.2}** |\n",
                n(&e["flood"]["rps"]),
                n(&e["quiet"]["p50_ms"]),
                n(&e["quiet"]["p99_ms"]),
                n(&e["p99_ratio"]),
            );
        }
    }
    for isolation in ["process", "instance"] {
        let e = &r[isolation];
        out += &format!(
            "| {isolation} | {:.2} / {:.2} | {:.2} / {:.2} | **{:.2}** | {:.0} | {} |\n",
            n(&e["quiet_solo"]["p50_ms"]),
            n(&e["quiet_solo"]["p99_ms"]),
            n(&e["quiet_loaded"]["p50_ms"]),
            n(&e["quiet_loaded"]["p99_ms"]),
            n(&e["p99_ratio"]),
            n(&e["noisy"]["rps"]),
            e["noisy"]["non_2xx"],
        );
    }
    out + &forged
}
