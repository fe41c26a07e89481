//! PiCloud's executor: runs a Rhai script's `handle(req)` in the wasm guest under fuel, memory
//! and time limits, in one of two isolation modes (see [`Isolation`]).
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo() -> Result<(), picloud_executor_core::ExecutorError> {
//! use picloud_executor_core::{Executor, ExecutorConfig, Isolation};
//! use picloud_shared::{InvocationRequest, Limits};
//!
//! // In `main`, before anything else: picloud_executor_core::run_zygote_if_requested();
//! let executor = Executor::start(ExecutorConfig::new(Isolation::Process, "/var/cache/picloud")).await?;
//! let result = executor
//!     .invoke(r#"fn handle(req) { "hello" }"#, &InvocationRequest::get("/"), &Limits::default())
//!     .await;
//! assert!(result.outcome.is_ok());
//! # Ok(()) }
//! ```

pub mod args;
mod config;
mod engine;
mod error;
mod host;
mod instance;
mod process;
pub mod service;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use picloud_shared::{
    FunctionRef, InvocationRequest, InvocationResult, Limits, MAX_CALL_LEVELS_CEILING, Outcome,
};
use serde::{Deserialize, Serialize};

pub use config::{ExecutorConfig, InstanceConfig, Isolation, ProcessConfig, default_max_running};
pub use error::ExecutorError;
pub use picloud_executor_protocol::{
    ClientError, Execute, ExecutorClient, HostCall, HostCalls, HostFuture, HostReply,
    InvocationContext, InvokeFuture, PoolStats, SandboxReport, default_total_memory,
};
pub use process::zygote::{ZYGOTE_ARG, run_zygote_if_requested};

/// The guest module as built by `build.rs` (before wizer's snapshot).
pub const GUEST_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/picloud_guest.wasm"));
/// SHA-256 of [`GUEST_WASM`], hex: part of the module cache key.
pub const GUEST_SHA256: &str = env!("PICLOUD_GUEST_SHA256");

/// A worker's view of its own sandbox, for tests ([`ProcessConfig::diagnostics`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiagnosticReport {
    /// `/proc/self/status` as read from inside the sandboxed worker.
    pub status: String,
    /// The worker's open descriptors (the four the diagnostic itself holds excluded).
    pub fds: Vec<i32>,
    pub channel_fd: i32,
    pub module_fd: Option<i32>,
    /// `/proc/self/environ` (NUL separators as newlines): the environment block in the worker's
    /// memory. Empty: the zygote is started with a cleared environment.
    pub environ: String,
    /// `/proc/self/cmdline`, the same way.
    pub cmdline: String,
    /// Variables in the worker's live environment after its sandbox was entered.
    pub env_vars: usize,
    /// What became of forbidden system calls tried from inside the sandbox, by name
    /// (`openat`, `socket inet`, `clone`, `execve`, `ptrace attach`, `kill`, …): the error, or
    /// `"allowed"`.
    pub attempts: std::collections::BTreeMap<String, String>,
}

/// Which invocations go first when they wait for a worker (process mode) or a runner thread
/// (instance mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Invocations of a tenant with nothing else running (and those of no tenant).
    First,
    /// Invocations of a tenant that already runs others: a flood waits behind everyone else.
    Second,
}

/// One running (or waiting) invocation of a tenant, counted while it lives.
struct TenantLoad<'a> {
    load: &'a Mutex<HashMap<String, u32>>,
    tenant: &'a str,
    /// The tenant's other invocations running when this one started.
    others: u32,
}

impl<'a> TenantLoad<'a> {
    fn enter(load: &'a Mutex<HashMap<String, u32>>, tenant: &'a str) -> Self {
        let others = load.lock().map_or(0, |mut load| {
            let n = load.entry(tenant.to_string()).or_insert(0);
            *n += 1;
            *n - 1
        });
        Self {
            load,
            tenant,
            others,
        }
    }
}

impl Drop for TenantLoad<'_> {
    fn drop(&mut self) {
        if let Ok(mut load) = self.load.lock()
            && let Some(n) = load.get_mut(self.tenant)
        {
            *n -= 1;
            if *n == 0 {
                load.remove(self.tenant);
            }
        }
    }
}

#[derive(Debug)]
enum Mode {
    Process(process::ProcessExecutor),
    Instance(instance::InstanceExecutor),
}

/// Runs invocations. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Executor {
    mode: Mode,
    config: ExecutorConfig,
    /// Invocations running or waiting now, by tenant.
    tenant_load: Mutex<HashMap<String, u32>>,
    /// Invocations running now and their memory limits, summed: the machine-wide caps.
    running: Arc<Mutex<(usize, u64)>>,
}

/// A running invocation's share of the machine-wide caps, given back when dropped.
struct Running {
    counts: Arc<Mutex<(usize, u64)>>,
    memory: u64,
}

impl Running {
    /// A share, or why there is none: the running cap or the memory cap is reached.
    fn enter(
        counts: &Arc<Mutex<(usize, u64)>>,
        memory: u64,
        config: &ExecutorConfig,
    ) -> Result<Self, String> {
        let mut now = counts
            .lock()
            .map_err(|_| "the executor's counts are poisoned")?;
        if now.0 >= config.max_running {
            return Err(format!(
                "the server is running its most invocations at once ({}); retry shortly",
                config.max_running
            ));
        }
        if now.1 + memory > config.max_total_memory_bytes {
            return Err(format!(
                "the server's memory for invocations ({} MiB) is taken; retry shortly",
                config.max_total_memory_bytes >> 20
            ));
        }
        now.0 += 1;
        now.1 += memory;
        Ok(Self {
            counts: Arc::clone(counts),
            memory,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut now) = self.counts.lock() {
            now.0 -= 1;
            now.1 -= self.memory;
        }
    }
}

impl Executor {
    /// Compiles the guest into the module cache if needed, then starts the zygote and its warm
    /// workers (process mode) or the runner threads (instance mode).
    ///
    /// # Errors
    ///
    /// When the cache directory is unusable, the guest does not compile, or the zygote does not
    /// start.
    pub async fn start(config: ExecutorConfig) -> Result<Self, ExecutorError> {
        let mode = match config.isolation {
            Isolation::Process => Mode::Process(process::ProcessExecutor::start(&config).await?),
            Isolation::Instance => {
                let cfg = config.clone();
                let runner =
                    tokio::task::spawn_blocking(move || instance::InstanceExecutor::start(&cfg))
                        .await
                        .map_err(|e| ExecutorError::Guest(e.to_string()))??;
                Mode::Instance(runner)
            }
        };
        Ok(Self {
            mode,
            config,
            tenant_load: Mutex::new(HashMap::new()),
            running: Arc::new(Mutex::new((0, 0))),
        })
    }

    pub fn isolation(&self) -> Isolation {
        self.config.isolation
    }

    /// Runs `script`'s `handle` with `request` in a worker no one used before. Never fails:
    /// whatever happens ends in the result's [`Outcome`]. Limits above the executor's ceilings
    /// are lowered to them.
    pub async fn invoke(
        &self,
        script: &str,
        request: &InvocationRequest,
        limits: &Limits,
    ) -> InvocationResult {
        self.run(None, script, request, limits, InvocationContext::default())
            .await
    }

    /// As [`Executor::invoke`], for `owner`'s function: with
    /// [`ProcessConfig::max_invocations_per_worker`] above 1, a worker that served this same
    /// function may serve it again (each time in a fresh wasm instance); never another one.
    pub async fn invoke_for(
        &self,
        owner: &FunctionRef,
        script: &str,
        request: &InvocationRequest,
        limits: &Limits,
    ) -> InvocationResult {
        self.run(
            Some(owner),
            script,
            request,
            limits,
            InvocationContext::default(),
        )
        .await
    }

    /// As [`Executor::invoke_for`], with the function's variables and host calls.
    pub async fn invoke_with(
        &self,
        owner: &FunctionRef,
        script: &str,
        request: &InvocationRequest,
        limits: &Limits,
        context: InvocationContext<'_>,
    ) -> InvocationResult {
        self.run(Some(owner), script, request, limits, context)
            .await
    }

    async fn run(
        &self,
        owner: Option<&FunctionRef>,
        script: &str,
        request: &InvocationRequest,
        limits: &Limits,
        context: InvocationContext<'_>,
    ) -> InvocationResult {
        let started = Instant::now();
        if script.len() > self.config.max_script_bytes {
            return InvocationResult::failed(
                Outcome::ScriptError {
                    message: format!(
                        "the script is {} bytes; the limit is {} bytes",
                        script.len(),
                        self.config.max_script_bytes
                    ),
                    line: None,
                    column: None,
                },
                started.elapsed(),
            );
        }
        let mut limits = limits.clone();
        limits.memory_bytes = limits.memory_bytes.min(self.config.max_memory_bytes);
        limits.script.max_call_levels = limits.script.max_call_levels.min(MAX_CALL_LEVELS_CEILING);
        let _running = match Running::enter(&self.running, limits.memory_bytes, &self.config) {
            Ok(share) => share,
            Err(message) => {
                return InvocationResult::failed(
                    Outcome::Overloaded { message },
                    started.elapsed(),
                );
            }
        };
        let input = guest_input(script, request, &limits, context.env, context.event);
        let host = context.host;
        // Counted from before the wait for a worker: a tenant's waiting invocations count as
        // running, so that its flood queues behind nobody else.
        let load = owner.map(|o| TenantLoad::enter(&self.tenant_load, &o.tenant));
        let crowded = load.as_ref().is_some_and(|l| l.others > 0);
        let mut result = match &self.mode {
            Mode::Process(p) => p.invoke(input, limits, owner, host, crowded).await,
            Mode::Instance(i) => {
                let lane = if crowded { Lane::Second } else { Lane::First };
                i.invoke(input, limits, host, lane).await
            }
        };
        result.enforce_response_rules();
        result
    }

    /// The pool's state (all zero in instance mode).
    pub fn stats(&self) -> PoolStats {
        match &self.mode {
            Mode::Process(p) => p.stats(),
            Mode::Instance(_) => PoolStats::default(),
        }
    }

    /// The layers the zygote applied (`None` in instance mode).
    pub fn sandbox(&self) -> Option<&SandboxReport> {
        match &self.mode {
            Mode::Process(p) => Some(p.sandbox()),
            Mode::Instance(_) => None,
        }
    }

    /// PIDs of workers running an invocation now (process mode).
    pub fn busy_worker_pids(&self) -> Vec<i32> {
        match &self.mode {
            Mode::Process(p) => p.busy_pids(),
            Mode::Instance(_) => Vec::new(),
        }
    }

    /// The zygote's PID (process mode); its children are the workers.
    pub fn zygote_pid(&self) -> Option<i32> {
        match &self.mode {
            Mode::Process(p) => p.zygote_pid(),
            Mode::Instance(_) => None,
        }
    }

    /// Has a warm worker report its own sandbox. Consumes that worker.
    ///
    /// # Errors
    ///
    /// [`ExecutorError::DiagnosticsDisabled`] unless [`ProcessConfig::diagnostics`] is set (and
    /// always in instance mode).
    pub async fn diagnose(&self) -> Result<DiagnosticReport, ExecutorError> {
        match &self.mode {
            Mode::Process(p) if self.config.process.diagnostics => p.diagnose().await,
            _ => Err(ExecutorError::DiagnosticsDisabled),
        }
    }
}

impl Execute for Executor {
    fn execute<'a>(
        &'a self,
        owner: &'a FunctionRef,
        script: &'a str,
        request: &'a InvocationRequest,
        limits: &'a Limits,
        context: InvocationContext<'a>,
    ) -> InvokeFuture<'a> {
        Box::pin(self.invoke_with(owner, script, request, limits, context))
    }

    fn stats(&self) -> PoolStats {
        Executor::stats(self)
    }
}

/// Runs one invocation in this process and thread, loading the guest from the module cache
/// first: no pool, no sandbox, no async. It is the naive "start a fresh worker per request"
/// model, kept for the benchmark that measures what the warm pool saves.
///
/// # Errors
///
/// When the guest cannot be loaded or compiled.
pub fn invoke_once(
    config: &ExecutorConfig,
    script: &str,
    request: &InvocationRequest,
    limits: &Limits,
) -> Result<InvocationResult, ExecutorError> {
    let started = Instant::now();
    let engine = engine::engine(config, Isolation::Process)?;
    let guest = engine::load_guest(&engine, Isolation::Process, &config.cache_dir)?;
    let linker = host::linker(&engine, &guest.module).map_err(ExecutorError::guest)?;
    let mut store = host::new_store(&engine, limits.memory_bytes, limits.max_log_bytes);
    let input = guest_input(script, request, limits, None, None);
    let result = host::arm_store(&mut store, limits)
        .and_then(|()| linker.instantiate(&mut store, &guest.module))
        .and_then(|instance| host::run(&mut store, &instance, &input));
    Ok(host::finish(&mut store, result, limits, started))
}

/// [`picloud_shared::guest::GuestInput`] as written: borrowed, so that the script, the request and the variables are
/// not copied on every invocation before being encoded (the test below keeps the two alike).
#[derive(Serialize)]
struct GuestInputRef<'a> {
    script: &'a str,
    request: &'a InvocationRequest,
    limits: &'a picloud_shared::ScriptLimits,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
}

/// The JSON the guest reads for one invocation.
pub(crate) fn guest_input(
    script: &str,
    request: &InvocationRequest,
    limits: &Limits,
    env: Option<&BTreeMap<String, String>>,
    event: Option<&str>,
) -> Vec<u8> {
    let input = GuestInputRef {
        script,
        request,
        limits: &limits.script,
        env,
        event,
    };
    // Serializing plain strings and maps cannot fail.
    serde_json::to_vec(&input).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use picloud_shared::guest::GuestInput;

    #[test]
    fn the_borrowed_input_reads_back_as_the_guest_input() {
        let env: BTreeMap<String, String> = [("K".into(), "v".into())].into();
        let request = InvocationRequest::get("/x");
        let limits = Limits::default();
        for (env, event) in [(Some(&env), None), (None, Some(r#"{"schedule":1}"#))] {
            let bytes = guest_input("fn handle(r) { 1 }", &request, &limits, env, event);
            let back: GuestInput = serde_json::from_slice(&bytes).expect("a GuestInput");
            assert_eq!(back.script, "fn handle(r) { 1 }");
            assert_eq!(back.request.path, "/x");
            assert_eq!(back.limits.max_operations, limits.script.max_operations);
            assert_eq!(back.env, env.cloned().unwrap_or_default());
            assert_eq!(back.event.as_deref(), event);
        }
    }
}
