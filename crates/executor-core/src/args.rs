//! The executor's command-line flags, which `picloud serve` and `picloud-executor` both take
//! (every flag is also an environment variable).

use clap::Args;

/// The executor's machine-wide caps (`picloud serve` and `picloud-executor`).
#[derive(Debug, Clone, Args)]
pub struct ExecutorArgs {
    /// Invocations running at once on this executor, all tenants together (more: `503
    /// overloaded` with `Retry-After`). Default: one per 32 MiB of the memory below, from 4
    /// to 1,024.
    #[arg(long, env = "PICLOUD_MAX_RUNNING_INVOCATIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_running_invocations: Option<u64>,
    /// Bytes of memory the invocations running at once may have by their limits, summed (more:
    /// `503 overloaded`). Default: half the machine's memory.
    #[arg(long, env = "PICLOUD_MAX_INVOCATION_MEMORY",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_invocation_memory: Option<u64>,
}

impl ExecutorArgs {
    /// Sets the caps given (the rest keep their defaults, sized from the machine).
    pub fn apply(&self, config: &mut crate::ExecutorConfig) {
        if let Some(memory) = self.max_invocation_memory {
            config.max_total_memory_bytes = memory;
            config.max_running = crate::default_max_running(memory);
        }
        if let Some(running) = self.max_running_invocations {
            config.max_running = usize::try_from(running).unwrap_or(usize::MAX);
        }
    }
}
