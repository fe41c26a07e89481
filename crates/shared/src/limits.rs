use serde::{Deserialize, Serialize};

/// Per-invocation limits enforced by the executor. Later issues add per-function values and
/// admin ceilings on top of these defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Wasm fuel (roughly one unit per wasm instruction). Default `1_000_000_000`, about a
    /// second of CPU on a Raspberry Pi class core.
    pub fuel: u64,
    /// Linear memory ceiling in bytes. Default 64 MiB.
    pub memory_bytes: u64,
    /// Wall-clock deadline in milliseconds. Default 5,000.
    pub timeout_ms: u64,
    /// Bytes of log text kept per invocation; later lines are dropped and counted. Default 64 KiB.
    pub max_log_bytes: u32,
    /// Limits Rhai enforces inside the guest.
    pub script: ScriptLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 1_000_000_000,
            memory_bytes: 64 << 20,
            timeout_ms: 5_000,
            max_log_bytes: 64 << 10,
            script: ScriptLimits::default(),
        }
    }
}

/// Rhai's own limits, set in the guest's engine for each invocation. They stop runaway scripts
/// long before fuel or memory would (a string-doubling bomb burns over a second of fuel before
/// it reaches a 64 MiB memory limit), and with a precise message. `0` means "no limit" for each
/// size, as in Rhai.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScriptLimits {
    /// Rhai operations. Default `10_000_000`.
    pub max_operations: u64,
    /// Nested function calls. Default 64; at most 128 fit the guest's 1 MiB stack.
    pub max_call_levels: u32,
    /// Expression nesting at global level. Default 64.
    pub max_expr_depth: u32,
    /// Expression nesting inside functions. Default 32.
    pub max_function_expr_depth: u32,
    /// Bytes in one string. Default 4 MiB.
    pub max_string_bytes: u32,
    /// Elements in one array. Default 10,000: Rhai re-measures a container after every change,
    /// so growing one to n elements costs O(n²); at 100,000 a push loop spends seconds of fuel.
    pub max_array_len: u32,
    /// Entries in one object map. Default 10,000, for the same reason.
    pub max_map_len: u32,
}

/// The most linear memory any function may be allowed, in bytes (256 MiB): the highest tenant
/// ceiling, and what every executor accepts.
pub const MAX_MEMORY_BYTES_CEILING: u64 = 256 << 20;

/// The deepest call nesting the guest's 1 MiB wasm stack is sized for; deeper settings are
/// lowered to this.
pub const MAX_CALL_LEVELS_CEILING: u32 = 128;

impl Default for ScriptLimits {
    fn default() -> Self {
        Self {
            max_operations: 10_000_000,
            max_call_levels: 64,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_bytes: 4 << 20,
            max_array_len: 10_000,
            max_map_len: 10_000,
        }
    }
}
