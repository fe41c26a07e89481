//! What runs an invocation, as the rest of PiCloud sees it.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use picloud_shared::host::HostCalls;
use picloud_shared::{FunctionRef, InvocationRequest, InvocationResult, Limits};
use serde::{Deserialize, Serialize};

/// A future an invoker returns; boxed so that [`Invoker`] and [`Execute`] can be trait objects.
pub type InvokeFuture<'a> = Pin<Box<dyn Future<Output = InvocationResult> + Send + 'a>>;

/// One invocation of a tenant's function, as the API (test-invokes), the endpoints and the
/// scheduler hand it on.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    /// Whose data the invocation's host calls (the key-value store) reach.
    pub tenant_id: i64,
    pub owner: &'a FunctionRef,
    pub script: &'a str,
    pub request: &'a InvocationRequest,
    pub limits: &'a Limits,
    /// The function's variables and secrets, for `env(name)`.
    pub env: &'a BTreeMap<String, String>,
    /// A schedule's tick as JSON: the script's `on_schedule(event)` runs instead of
    /// `handle(req)`.
    pub event: Option<&'a str>,
}

/// Runs a tenant's invocation with everything around it (its tenant's key-value store): the
/// node's invoker, in the all-in-one server and on every cluster node.
pub trait Invoker: Send + Sync + 'static {
    fn invoke<'a>(&'a self, invocation: Invocation<'a>) -> InvokeFuture<'a>;

    /// Whether invocations can run now (a cluster node's executor answers). A scheduler
    /// claims no tick while it is false, so a tick runs on a healthy node. Default: true.
    fn ready(&self) -> bool {
        true
    }
}

/// Runs a script in the sandbox: `picloud-executor-core`'s `Executor`, in this process tree.
/// The node holds it as a trait object, so that a node which hands its invocations to a
/// `picloud-executor` over [`crate::ExecutorClient`] instead never compiles the sandbox.
pub trait Execute: Send + Sync + std::fmt::Debug + 'static {
    fn execute<'a>(
        &'a self,
        owner: &'a FunctionRef,
        script: &'a str,
        request: &'a InvocationRequest,
        limits: &'a Limits,
        context: InvocationContext<'a>,
    ) -> InvokeFuture<'a>;

    /// The pool's figures now.
    fn stats(&self) -> PoolStats;
}

/// What an invocation gets beyond its script and request: the function's variables and
/// whoever answers its host calls (scoped to its tenant). The default has neither: `env(name)`
/// is `()` and every host call fails with a clear error.
#[derive(Clone, Default)]
pub struct InvocationContext<'a> {
    /// Borrowed: it is copied once, into the guest input.
    pub env: Option<&'a BTreeMap<String, String>>,
    pub host: Option<Arc<dyn HostCalls>>,
    /// A schedule's tick as JSON: the guest calls `on_schedule(event)` with it instead of
    /// `handle(req)`.
    pub event: Option<&'a str>,
}

impl std::fmt::Debug for InvocationContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationContext")
            .field("env", &self.env.map(|e| e.keys().collect::<Vec<_>>()))
            .field("host", &self.host.is_some())
            .field("event", &self.event)
            .finish()
    }
}

/// A snapshot of an executor's pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    pub warm: usize,
    pub busy: usize,
    /// Requested from the zygote, not yet arrived.
    pub pending: usize,
    /// Warm workers the pool currently aims for.
    pub target: usize,
    pub spawned_total: u64,
    /// Invocations that found no warm worker and waited for one.
    pub misses_total: u64,
    /// Workers parked for another invocation of the function they served.
    pub reusable: usize,
    /// Invocations served by a reused worker.
    pub reused_total: u64,
}

/// Which sandbox layers the zygote could apply; the per-worker layers (closed descriptors,
/// cleared environment, rlimits, no-new-privs, seccomp) are always applied, or the worker
/// refuses to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    pub network_namespace: bool,
    pub user_namespace: bool,
    /// The zygote started as root and switched to `nobody`.
    pub dropped_root: bool,
    /// The effective uid workers run as.
    pub uid: u32,
}

/// The memory an executor's invocations may have together by default (a node sizes its
/// ingress by it too): half the machine's memory (`MemTotal`), or 1 GiB when it cannot be read.
#[must_use]
pub fn default_total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(1 << 30, |kib| kib * 1024 / 2)
}
