//! What the HTTP benchmarks share: starting `picloud serve` and Caddy as real processes,
//! deploying functions through the API, and driving load with `wrk`.

// Each benchmark binary uses its own part of this module.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

pub const ADMIN: &str = "pc_bench_admin_0123456789abcdef0123456789";

/// Where a benchmark finds things.
pub struct Paths {
    /// The repository (results and docs are written there).
    pub root: PathBuf,
    /// The benchmark's own directory in the target: scratch space lives there.
    pub exe_dir: PathBuf,
    /// The `picloud` binary built beside the benchmark.
    pub picloud: PathBuf,
}

/// The [`Paths`] of this run; an error when `picloud` was not built.
pub fn paths() -> Result<Paths> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("executable directory")?
        .to_path_buf();
    let picloud = exe_dir.join("picloud");
    ensure!(
        picloud.exists(),
        "build the picloud binary first: {}",
        picloud.display()
    );
    Ok(Paths {
        root,
        exe_dir,
        picloud,
    })
}

/// A child process, stopped with SIGTERM (then SIGKILL after 15 s) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a process this benchmark started (SIGTERM: drains, then exits).
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The number after `--name` in `args`.
pub fn flag(args: &[String], name: &str) -> Option<u64> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn wait_listening(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `wrk -t{threads} -c{conns} -d{seconds}s --latency URL`, parsed.
pub fn wrk(url: &str, threads: u32, conns: u32, seconds: u64) -> Result<Value> {
    wrk_scripted(url, threads, conns, seconds, None)
}

/// [`wrk`] with a Lua `script` of wrk's (`-s`), which shapes each request.
pub fn wrk_scripted(
    url: &str,
    threads: u32,
    conns: u32,
    seconds: u64,
    script: Option<&Path>,
) -> Result<Value> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        &format!("-t{threads}"),
        &format!("-c{conns}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    let out = cmd
        .arg(url)
        .output()
        .context("wrk is required (apt-get install wrk; scripts/setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "wrk failed: {text}");
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let ms = |v: String| -> f64 {
        let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = n.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => f64::NAN,
        }
    };
    let rate: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .context("no Requests/sec in wrk's output")?;
    let non2xx: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let errors = text.lines().any(|l| l.trim().starts_with("Socket errors:"));
    Ok(json!({
        "threads": threads, "connections": conns, "seconds": seconds,
        "rps": rate,
        "p50_ms": field("50%").map(ms), "p90_ms": field("90%").map(ms), "p99_ms": field("99%").map(ms),
        "non_2xx": non2xx, "socket_errors": errors,
    }))
}

/// Starts `picloud serve` on a fresh data directory (module cache shared beside it) with the
/// benchmark's admin token and `extra` flags; returns it and its port. Its log goes to this
/// process's standard error.
pub fn serve(picloud: &Path, dir: &Path, isolation: &str, extra: &[&str]) -> Result<(Proc, u16)> {
    serve_logged(picloud, dir, isolation, extra, Stdio::inherit())
}

/// [`serve`] with the server's log sent to `log`.
pub fn serve_logged(
    picloud: &Path,
    dir: &Path,
    isolation: &str,
    extra: &[&str],
    log: impl Into<Stdio>,
) -> Result<(Proc, u16)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let child = Command::new(picloud)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--isolation",
            isolation,
        ])
        .arg("--data-dir")
        .arg(dir)
        .arg("--cache-dir")
        .arg(dir.join("../module-cache"))
        .args(extra)
        .env("PICLOUD_ADMIN_TOKEN", ADMIN)
        .env_remove("PICLOUD_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting picloud serve")?;
    let server = Proc(child);
    wait_listening(port)?;
    Ok((server, port))
}

/// Creates `tenant` if needed and deploys `source` as its function `name` with `limits`.
pub fn deploy(port: u16, tenant: &str, name: &str, source: &str, limits: Value) -> Result<()> {
    deploy_with(port, tenant, name, source, json!({ "limits": limits }))
}

/// [`deploy`] with more fields of the create request (`public`, `limits`, …) in `extra`.
pub fn deploy_with(port: u16, tenant: &str, name: &str, source: &str, extra: Value) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let auth = format!("Bearer {ADMIN}");
    let r = agent
        .post(&format!("{base}/tenants"))
        .header("Authorization", &auth)
        .send_json(json!({ "name": tenant }))?;
    ensure!(
        r.status() == 201 || r.status() == 409,
        "creating the tenant: {}",
        r.status()
    );
    let r = agent
        .post(&format!("{base}/tenants/{tenant}/functions"))
        .header("Authorization", &auth)
        .send_json({
            let mut body = json!({ "name": name, "source": source, "deploy": true });
            if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
                body.extend(extra.clone());
            }
            body
        })?;
    ensure!(r.status() == 201, "deploying {name}: {}", r.status());
    Ok(())
}

/// Caddy on `caddy/Caddyfile` in front of `upstream_port`; returns it and its port.
pub fn caddy(root: &Path, dir: &Path, upstream_port: u16) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(root.join("caddy/Caddyfile"))
        .env("PICLOUD_SITE", format!("http://127.0.0.1:{port}"))
        .env("PICLOUD_UPSTREAM", format!("127.0.0.1:{upstream_port}"))
        .env("XDG_DATA_HOME", dir.join("caddy-data"))
        .env("XDG_CONFIG_HOME", dir.join("caddy-config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("caddy is required (scripts/setup installs it)")?;
    let proc = Proc(child);
    wait_listening(port)?;
    Ok((proc, port))
}

/// The machine a run measured: figures from different machines do not compare.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": kernel.trim(),
        "date": chrono_like_now(),
    })
}

fn chrono_like_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
