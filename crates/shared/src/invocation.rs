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
    /// Its caller went away before the answer (the client disconnected): the invocation was
    /// stopped (its worker killed) and nobody got a response.
    Cancelled { message: String },
}

impl Outcome {
    /// Every kind, in a fixed order: for metrics that pre-set each series to 0.
    pub const KINDS: [&'static str; 9] = [
        "ok",
        "script_error",
        "timeout",
        "fuel_exhausted",
        "memory_limit",
        "stack_overflow",
        "worker_crashed",
        "internal",
        "cancelled",
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
            Self::Cancelled { .. } => "cancelled",
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
            // Nobody receives it; 499 is what proxies record for a client that closed first.
            Self::Cancelled { .. } => 499,
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
            | Self::Internal { message }
            | Self::Cancelled { message } => format!("{}: {message}", self.kind()),
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

/// Response headers a script may not set, dropped from its answer: they frame the HTTP message
/// or the connection (a script's `content-length` or `transfer-encoding` beside the server's
/// own would break the framing, and behind a proxy's pooled connection mix one tenant's
/// response into another's), or widen a service worker's scope past the script's own path.
pub const DROPPED_RESPONSE_HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "service-worker-allowed",
];

/// Whether a script's response may carry the header `name` (lower case).
pub fn response_header_allowed(name: &str) -> bool {
    !DROPPED_RESPONSE_HEADERS.contains(&name) && !name.starts_with("proxy-")
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl InvocationResult {
    /// Holds the script's response to what HTTP and the platform allow, whatever produced it
    /// (the guest checks the same, but its answer comes from a sandbox that runs tenant code):
    /// a status from 200 to 599 (no informational or switching status) and header names and
    /// values that can be sent as they are; anything else turns the outcome into a
    /// `script_error` naming it, never a broken connection. Headers of
    /// [`DROPPED_RESPONSE_HEADERS`] and `proxy-*` are removed, each with a `warn` line in the
    /// invocation's log saying so.
    pub fn enforce_response_rules(&mut self) {
        let Some(response) = &mut self.response else {
            return;
        };
        let refusal = if !(200..=599).contains(&response.status) {
            Some(format!(
                "`status` must be from 200 to 599, not {}",
                response.status
            ))
        } else {
            response.headers.iter().find_map(|(name, value)| {
                if name.is_empty() || !name.bytes().all(is_token_byte) {
                    Some(format!("invalid header name {name:?}"))
                } else if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                    Some(format!(
                        "header {name:?} has a control character (a line break, say) in its value"
                    ))
                } else {
                    None
                }
            })
        };
        if let Some(message) = refusal {
            self.response = None;
            self.outcome = Outcome::ScriptError {
                message,
                line: None,
                column: None,
            };
            return;
        }
        let mut dropped = Vec::new();
        let headers = std::mem::take(&mut response.headers);
        for (name, value) in headers {
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                name.to_ascii_lowercase()
            } else {
                name
            };
            if response_header_allowed(&name) {
                response.headers.insert(name, value);
            } else {
                dropped.push(name);
            }
        }
        for name in dropped {
            self.logs.push(LogLine {
                level: LogLevel::Warn,
                message: format!(
                    "dropped the response header `{name}`: the platform sets framing and \
                     connection headers itself"
                ),
            });
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, headers: &[(&str, &str)]) -> InvocationResult {
        InvocationResult {
            outcome: Outcome::Ok,
            response: Some(InvocationResponse {
                status,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body: "hello".into(),
            }),
            duration_us: 1,
            wait_us: 0,
            fuel_used: 1,
            peak_memory_bytes: 1,
            logs: Vec::new(),
            logs_truncated: false,
        }
    }

    #[test]
    fn framing_headers_are_dropped_and_logged() {
        let mut result = answered(
            200,
            &[
                ("content-length", "1000"),
                ("Transfer-Encoding", "chunked"),
                ("connection", "close"),
                ("proxy-authenticate", "Basic"),
                ("service-worker-allowed", "/"),
                ("x-mine", "kept"),
                ("content-type", "text/plain"),
            ],
        );
        result.enforce_response_rules();
        assert!(result.outcome.is_ok());
        let response = result.response.expect("a response");
        let names: Vec<&str> = response.headers.keys().map(String::as_str).collect();
        assert_eq!(names, ["content-type", "x-mine"]);
        assert_eq!(result.logs.len(), 5);
        assert!(result.logs.iter().all(|l| l.level == LogLevel::Warn));
        for name in ["content-length", "transfer-encoding", "connection"] {
            let named = format!("`{name}`");
            assert!(
                result.logs.iter().any(|l| l.message.contains(&named)),
                "{:?}",
                result.logs
            );
        }
    }

    #[test]
    fn statuses_and_headers_that_cannot_be_sent_are_script_errors() {
        for (status, headers, says) in [
            (101, vec![], "not 101"),
            (199, vec![], "not 199"),
            (600, vec![], "not 600"),
            (200, vec![("bad name", "x")], "invalid header name"),
            (200, vec![("x-split", "a\r\nset-cookie: b")], "\"x-split\""),
            (200, vec![("x-nul", "a\0b")], "\"x-nul\""),
        ] {
            let mut result = answered(status, &headers);
            result.enforce_response_rules();
            assert!(result.response.is_none());
            match &result.outcome {
                Outcome::ScriptError { message, .. } => {
                    assert!(message.contains(says), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
