//! The node's command-line flags, in groups that `picloud serve`, `picloud-orchestrator` and
//! `picloud-manager` each take what they need of (every flag is also an environment variable).

use std::time::Duration;

use crate::scheduler::SchedulerConfig;
use clap::Args;
use picloud_store::RecordConfig;
use picloud_store::kv::KvLimits;

use crate::{FunctionHosts, IngressConfig};

/// Where tenants' functions answer on hosts of their own (see [`crate::hosts`]).
#[derive(Debug, Clone, Args)]
pub struct HostArgs {
    /// Each tenant's functions answer at `{tenant}.{this}/{function}` (an origin of its own);
    /// `/fn/{tenant}/{function}` on any other host stays, sandboxed, for API clients.
    #[arg(long, env = "PICLOUD_FUNCTIONS_DOMAIN", default_value = "localhost",
          value_parser = |s: &str| FunctionHosts::new(s))]
    pub functions_domain: FunctionHosts,
}

/// Rates and concurrency at the endpoints.
#[derive(Debug, Clone, Args)]
pub struct IngressArgs {
    /// Invocations of one tenant's functions running at once (more wait, then 429).
    /// Default: 32, or fewer on a small machine: no more than the machine's memory for
    /// invocations (`--max-invocation-memory`) holds at the default 64 MiB each, so that one
    /// tenant alone cannot take it all.
    #[arg(long, env = "PICLOUD_TENANT_CONCURRENCY")]
    pub tenant_concurrency: Option<u64>,
    /// Requests per second to one function (more: 429); 0 = no limit.
    #[arg(long, env = "PICLOUD_FUNCTION_RATE", default_value_t = IngressConfig::default().function_rate)]
    pub function_rate: u32,
    /// Requests per second to one tenant's functions (more: 429); 0 = no limit.
    #[arg(long, env = "PICLOUD_TENANT_RATE", default_value_t = IngressConfig::default().tenant_rate)]
    pub tenant_rate: u32,
    /// How long a request may wait for a concurrency place before it is answered 429, in ms.
    #[arg(long, env = "PICLOUD_QUEUE_WAIT_MS", default_value_t = 100)]
    pub queue_wait_ms: u64,
}

impl IngressArgs {
    /// The configuration on a machine whose invocations may have `invocation_memory` bytes
    /// together.
    pub fn config(&self, invocation_memory: u64) -> IngressConfig {
        let fits = invocation_memory / picloud_store::FunctionLimits::DEFAULT.memory_bytes;
        IngressConfig {
            tenant_concurrency: self
                .tenant_concurrency
                .unwrap_or_else(|| IngressConfig::default().tenant_concurrency.min(fits.max(1))),
            function_rate: self.function_rate,
            tenant_rate: self.tenant_rate,
            queue_wait: Duration::from_millis(self.queue_wait_ms),
        }
    }
}

/// Invocation records: their queue and how long they are kept.
#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// Invocation records waiting to be written; past this they are dropped and counted.
    #[arg(long, env = "PICLOUD_RECORDS_QUEUE", default_value_t = RecordConfig::default().queue)]
    pub records_queue: usize,
    /// Invocation records older than this many hours are deleted.
    #[arg(long, env = "PICLOUD_RECORDS_RETENTION_HOURS", default_value_t = 168)]
    pub records_retention_hours: u64,
    /// Invocation records kept per function, newest first.
    #[arg(long, env = "PICLOUD_RECORDS_PER_FUNCTION", default_value_t = RecordConfig::default().per_function)]
    pub records_per_function: u32,
    /// Invocation records kept per tenant, all its functions together, newest first.
    #[arg(long, env = "PICLOUD_RECORDS_PER_TENANT", default_value_t = RecordConfig::default().per_tenant)]
    pub records_per_tenant: u32,
    /// Free bytes on the data directory's file system below which `/readyz` fails (the free
    /// space is also the metric `picloud_disk_free_bytes`).
    #[arg(long, env = "PICLOUD_MIN_FREE_DISK", default_value_t = 256 << 20)]
    pub min_free_disk: u64,
}

impl RecordArgs {
    /// The configuration, its records journalled in `spool` until written (see
    /// [`RecordConfig::spool`]).
    pub fn config(&self, spool: Option<std::path::PathBuf>) -> RecordConfig {
        RecordConfig {
            queue: self.records_queue,
            retention: Duration::from_secs(self.records_retention_hours * 3600),
            per_function: self.records_per_function,
            per_tenant: self.records_per_tenant,
            spool,
            ..RecordConfig::default()
        }
    }
}

/// Each tenant's key-value store.
#[derive(Debug, Clone, Args)]
pub struct KvArgs {
    /// Keys one tenant's key-value store may hold.
    #[arg(long, env = "PICLOUD_KV_MAX_KEYS", default_value_t = KvLimits::default().max_keys)]
    pub kv_max_keys: u64,
    /// Bytes of keys and values one tenant's key-value store may hold.
    #[arg(long, env = "PICLOUD_KV_MAX_BYTES", default_value_t = KvLimits::default().max_bytes)]
    pub kv_max_bytes: u64,
    /// Largest value `kv_set` stores, in bytes of JSON.
    #[arg(long, env = "PICLOUD_KV_MAX_VALUE_BYTES", default_value_t = KvLimits::default().max_value_bytes)]
    pub kv_max_value_bytes: usize,
    /// Key-value calls per second one tenant's invocations may make together (past it a call
    /// fails with a clear error); 0 = no limit.
    #[arg(long, env = "PICLOUD_KV_OPS_PER_SECOND", default_value_t = KvLimits::default().ops_per_second)]
    pub kv_ops_per_second: u32,
}

impl KvArgs {
    pub fn limits(&self) -> KvLimits {
        KvLimits {
            max_keys: self.kv_max_keys,
            max_bytes: self.kv_max_bytes,
            max_value_bytes: self.kv_max_value_bytes,
            ops_per_second: self.kv_ops_per_second,
            ..KvLimits::default()
        }
    }
}

/// How schedules run.
#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// Missed schedule ticks run after downtime: the most recent this many; older ones are
    /// skipped and counted. 0 skips them all.
    #[arg(long, env = "PICLOUD_SCHEDULE_BACKFILL", default_value_t = SchedulerConfig::default().backfill)]
    pub schedule_backfill: u32,
    /// How late (seconds) a schedule tick may start and still count as on time, not missed.
    #[arg(long, env = "PICLOUD_SCHEDULE_GRACE_SECONDS", default_value_t = SchedulerConfig::default().grace.as_secs())]
    pub schedule_grace_seconds: u64,
    /// How long past a schedule run's timeout its claim holds before another scheduler may
    /// take the schedule over (the run's server died), in seconds.
    #[arg(long, env = "PICLOUD_SCHEDULE_LEASE_MARGIN_SECONDS", default_value_t = SchedulerConfig::default().lease_margin.as_secs())]
    pub schedule_lease_margin_seconds: u64,
}

impl ScheduleArgs {
    pub fn config(&self) -> SchedulerConfig {
        SchedulerConfig {
            backfill: self.schedule_backfill,
            grace: Duration::from_secs(self.schedule_grace_seconds),
            lease_margin: Duration::from_secs(self.schedule_lease_margin_seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(tenant_concurrency: Option<u64>) -> IngressArgs {
        IngressArgs {
            tenant_concurrency,
            function_rate: 0,
            tenant_rate: 0,
            queue_wait_ms: 100,
        }
    }

    /// One tenant's default concurrency at the default memory fits in the machine's memory
    /// for invocations; a chosen one is kept as chosen.
    #[test]
    fn the_default_tenant_concurrency_fits_the_machine() {
        assert_eq!(ingress(None).config(256 << 20).tenant_concurrency, 4);
        assert_eq!(ingress(None).config(32 << 20).tenant_concurrency, 1);
        assert_eq!(ingress(None).config(64 << 30).tenant_concurrency, 32);
        assert_eq!(ingress(Some(50)).config(256 << 20).tenant_concurrency, 50);
    }
}
