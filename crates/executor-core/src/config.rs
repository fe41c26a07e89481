use std::path::PathBuf;
use std::time::Duration;

use picloud_executor_protocol::default_total_memory;
use serde::{Deserialize, Serialize};

/// Where invocations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// One pre-warmed, sandboxed OS process per invocation (the default): a crash, a kernel-level
    /// escape or a leak ends with the process.
    #[default]
    Process,
    /// A fresh wasm instance per invocation inside the executor's own process: faster, for
    /// trusted single-tenant installs.
    Instance,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Instance => "instance",
        }
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "process" => Ok(Self::Process),
            "instance" => Ok(Self::Instance),
            other => Err(format!(
                "unknown isolation mode '{other}': use process or instance"
            )),
        }
    }
}

/// How the executor is set up. Per-invocation limits travel with each invocation
/// ([`picloud_shared::Limits`]); this holds what is fixed for the executor's lifetime.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    pub isolation: Isolation,
    /// Directory for the compiled guest (one file per wasmtime version, guest and engine
    /// settings). Must be writable by the server and trusted: its files are loaded as native
    /// code.
    pub cache_dir: PathBuf,
    /// Largest linear memory any invocation may ask for, in bytes. Default 256 MiB
    /// ([`picloud_shared::MAX_MEMORY_BYTES_CEILING`], what the highest tenant ceiling allows).
    pub max_memory_bytes: u64,
    /// Largest script accepted, in bytes; larger ones end as `script_error` before reaching the
    /// guest. Default 1 MiB.
    pub max_script_bytes: usize,
    /// Meter wasm fuel. Default `true`. Without it only the deadline and Rhai's operation limit
    /// stop a runaway script, and `fuel_used` is 0; it exists to measure what fuel costs.
    pub consume_fuel: bool,
    /// Invocations running at once on this executor, whoever they are for; past it an
    /// invocation ends `overloaded` (503) without starting. Default: [`Self::max_total_memory_bytes`]
    /// over 32 MiB, from 4 to 1,024.
    pub max_running: usize,
    /// The memory limits of the invocations running at once, summed; past it as above.
    /// Default: half the machine's memory (1 GiB when it cannot be read).
    pub max_total_memory_bytes: u64,
    pub process: ProcessConfig,
    pub instance: InstanceConfig,
}

impl ExecutorConfig {
    /// The defaults, with the module cache in `cache_dir`.
    pub fn new(isolation: Isolation, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            isolation,
            cache_dir: cache_dir.into(),
            max_memory_bytes: picloud_shared::MAX_MEMORY_BYTES_CEILING,
            max_script_bytes: 1 << 20,
            consume_fuel: true,
            max_running: default_max_running(default_total_memory()),
            max_total_memory_bytes: default_total_memory(),
            process: ProcessConfig::default(),
            instance: InstanceConfig::default(),
        }
    }
}

/// Invocations at once for a memory budget: one per 32 MiB of it, from 4 to 1,024.
#[must_use]
pub fn default_max_running(total_memory: u64) -> usize {
    usize::try_from(total_memory / (32 << 20))
        .unwrap_or(usize::MAX)
        .clamp(4, 1024)
}

/// The pre-warmed worker pool of [`Isolation::Process`].
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// The program re-executed as the zygote; it must call
    /// [`crate::run_zygote_if_requested`] first thing in `main`. Default: the current
    /// executable.
    pub program: Option<PathBuf>,
    /// Warm workers kept when idle. Default 2.
    pub min_warm: usize,
    /// Most warm workers the pool grows to under load. Default 32.
    pub max_warm: usize,
    /// How long the pool stays grown after the last miss before shrinking to `min_warm`.
    /// Default 30 s.
    pub shrink_after: Duration,
    /// `RLIMIT_CPU` of each worker, a backstop behind fuel and the deadline; it counts every
    /// invocation the worker serves. Default 30 s.
    pub worker_cpu_seconds: u64,
    /// Invocations one worker process may serve, each in a fresh wasm instance, all for the
    /// same function of the same tenant ([`crate::Executor::invoke_for`]). Default 1: a
    /// process per invocation. More saves a fork per reuse, at the price of letting whatever an
    /// escaped script left in the process meet that same function's next invocation.
    pub max_invocations_per_worker: u32,
    /// Let tests ask a worker to report its own sandbox state. Never reachable by a tenant.
    /// Default `false`.
    pub diagnostics: bool,
    /// Run a worker whose tenant already has another invocation running in the kernel's idle
    /// scheduling class. Under CPU contention a tenant that floods its functions then yields
    /// the CPU to tenants that run one invocation at a time, and to the server itself; with the
    /// CPU idle it changes nothing. Default `true`.
    pub busy_tenants_yield: bool,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            program: None,
            min_warm: 2,
            max_warm: 32,
            shrink_after: Duration::from_secs(30),
            worker_cpu_seconds: 30,
            max_invocations_per_worker: 1,
            diagnostics: false,
            busy_tenants_yield: true,
        }
    }
}

/// The in-process runner of [`Isolation::Instance`].
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Threads running invocations (each with an 8 MiB stack). Default: the number of CPUs.
    pub threads: usize,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}
