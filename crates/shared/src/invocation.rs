use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One function of one tenant: what a worker may be reused for
/// (`ProcessConfig::max_invocations_per_worker` in the executor).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FunctionRef {
    pub tenant: String,
    pub function: String,
}

impl FunctionRef {
    pub fn new(tenant: impl Into<String>, function: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            function: function.into(),
        }
    }
}

/// An HTTP request as a script sees it (`req` in `fn handle(req)`).
///
/// Bodies are text: a body that is not UTF-8 reaches the script with invalid sequences replaced
/// by U+FFFD.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationRequest {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

impl InvocationRequest {
    /// A `GET /` with no query, headers or body: what `picloud invoke` sends by default.
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: "GET".into(),
            path: path.into(),
            ..Self::default()
        }
    }
}

/// What a script answered, already turned into HTTP terms by the guest (DESIGN.md §3).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

/// Severity of a log line written by a script.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// Parses the level a script passes to `log(level, msg)`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" => Self::Error,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }

    /// The wire number used by the guest's `log` import.
    pub fn from_wire(n: u32) -> Self {
        match n {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            _ => Self::Error,
        }
    }

    pub fn to_wire(self) -> u32 {
        self as u32
    }
}

/// One line of a script's log (`print`, `debug`, `log(level, msg)`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// How an invocation ended. Every invocation ends in exactly one of these, whatever the script
/// did; the `kind` names are part of the public API (JSON bodies, metrics labels).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The script returned a response.
    Ok,
    /// The script failed to compile, threw, or returned something that is not a response.
    ScriptError {
        message: String,
        line: Option<u32>,
        column: Option<u32>,
    },
    /// The wall-clock deadline passed.
    Timeout { limit_ms: u64 },
    /// The CPU budget ran out: wasm fuel, or Rhai's operation count.
    FuelExhausted { message: String },
    /// The script wanted more memory than its limit (wasm memory, or a Rhai size limit).
    MemoryLimit { message: String },
    /// Too deep: Rhai call levels or the wasm stack.
    StackOverflow { message: String },
    /// The worker process died without answering (killed, crashed).
    WorkerCrashed { message: String },
    /// PiCloud itself failed; the message is for operators, not tenants.
    Internal { message: String },
}

impl Outcome {
    /// Every kind, in a fixed order: for metrics that pre-set each series to 0.
    pub const KINDS: [&'static str; 8] = [
        "ok",
        "script_error",
        "timeout",
        "fuel_exhausted",
        "memory_limit",
        "stack_overflow",
        "worker_crashed",
        "internal",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ScriptError { .. } => "script_error",
            Self::Timeout { .. } => "timeout",
            Self::FuelExhausted { .. } => "fuel_exhausted",
            Self::MemoryLimit { .. } => "memory_limit",
            Self::StackOverflow { .. } => "stack_overflow",
            Self::WorkerCrashed { .. } => "worker_crashed",
            Self::Internal { .. } => "internal",
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok)
    }

    /// The HTTP status a client gets for this outcome when the script produced no response.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::ScriptError { .. } | Self::WorkerCrashed { .. } | Self::Internal { .. } => 500,
            Self::Timeout { .. } => 504,
            Self::FuelExhausted { .. } | Self::MemoryLimit { .. } | Self::StackOverflow { .. } => {
                507
            }
        }
    }

    /// A one-line human description.
    pub fn describe(&self) -> String {
        match self {
            Self::Ok => "ok".into(),
            Self::ScriptError {
                message,
                line: Some(l),
                column: Some(c),
            } => format!("script error at line {l}, column {c}: {message}"),
            Self::ScriptError { message, .. } => format!("script error: {message}"),
            Self::Timeout { limit_ms } => format!("timed out after {limit_ms} ms"),
            Self::FuelExhausted { message }
            | Self::MemoryLimit { message }
            | Self::StackOverflow { message }
            | Self::WorkerCrashed { message }
            | Self::Internal { message } => format!("{}: {message}", self.kind()),
        }
    }
}

/// Everything the executor reports about one invocation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationResult {
    pub outcome: Outcome,
    /// Present exactly when `outcome` is `Ok`.
    pub response: Option<InvocationResponse>,
    /// Wall-clock time from hand-over to the executor until the answer, in microseconds.
    pub duration_us: u64,
    /// Of `duration_us`, the time spent waiting for a worker process (process mode) or a runner
    /// thread (instance mode), in microseconds.
    #[serde(default)]
    pub wait_us: u64,
    pub fuel_used: u64,
    /// The largest linear memory the instance had, in bytes.
    pub peak_memory_bytes: u64,
    pub logs: Vec<LogLine>,
    /// True when lines were dropped because the log cap was reached.
    pub logs_truncated: bool,
}

impl InvocationResult {
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.duration_us)
    }

    /// A result for an invocation that never produced guest output.
    pub fn failed(outcome: Outcome, duration: Duration) -> Self {
        Self {
            outcome,
            response: None,
            duration_us: duration.as_micros() as u64,
            wait_us: 0,
            fuel_used: 0,
            peak_memory_bytes: 0,
            logs: Vec::new(),
            logs_truncated: false,
        }
    }
}
