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
    /// Parses the level a script passes to `log(level, msg)`, in any case (`"INFO"` is
    /// `"info"`); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
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
    /// The executor was at its machine-wide cap (invocations running, or their memory): the
    /// invocation did not start; the client may retry shortly.
    Overloaded { message: String },
}

impl Outcome {
    /// Every kind, in a fixed order: for metrics that pre-set each series to 0.
    pub const KINDS: [&'static str; 10] = [
        "ok",
        "script_error",
        "timeout",
        "fuel_exhausted",
        "memory_limit",
        "stack_overflow",
        "worker_crashed",
        "internal",
        "cancelled",
        "overloaded",
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
            Self::Overloaded { .. } => "overloaded",
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
            Self::Overloaded { .. } => 503,
        }
    }

    /// A one-line description for a caller who may not see the script's own text: the kind in
    /// words, never the script's error message nor its line and column (an anonymous caller
    /// of a public function; the tenant reads those in the invocation's record).
    pub fn describe_publicly(&self) -> String {
        match self {
            Self::Ok => "ok".into(),
            Self::ScriptError { .. } => "the script failed".into(),
            Self::Timeout { limit_ms } => format!("timed out after {limit_ms} ms"),
            Self::FuelExhausted { .. } => {
                "the script ran out of fuel (its computation budget)".into()
            }
            Self::MemoryLimit { .. } => "the script went past its memory limit".into(),
            Self::StackOverflow { .. } => "the script nested calls too deeply".into(),
            Self::WorkerCrashed { .. } => "the process running the script crashed".into(),
            Self::Internal { .. } => "internal error".into(),
            Self::Cancelled { .. } => "cancelled: the client went away".into(),
            Self::Overloaded { message } => format!("overloaded: {message}"),
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
            | Self::Cancelled { message }
            | Self::Overloaded { message } => format!("{}: {message}", self.kind()),
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

/// The longest outcome message a worker's answer may carry, in bytes (longer is cut).
pub const MAX_OUTCOME_MESSAGE: usize = 4 << 10;

/// Log bytes a worker's answer may carry beyond the invocation's log cap: the guest's own note
/// of how many lines it dropped.
const LOG_SLACK: u64 = 1 << 10;

/// The most response headers an answer may carry, and their most bytes in all.
pub const MAX_RESPONSE_HEADERS: usize = 100;
pub const MAX_RESPONSE_HEADER_BYTES: usize = 64 << 10;

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn cut_to(text: &mut String, max: usize) {
    if text.len() > max {
        text.truncate(text.floor_char_boundary(max));
    }
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
        let header_bytes: usize = response
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        let refusal = if !(200..=599).contains(&response.status) {
            Some(format!(
                "`status` must be from 200 to 599, not {}",
                response.status
            ))
        } else if response.headers.len() > MAX_RESPONSE_HEADERS {
            Some(format!(
                "{} response headers; at most {MAX_RESPONSE_HEADERS} may be sent",
                response.headers.len()
            ))
        } else if header_bytes > MAX_RESPONSE_HEADER_BYTES {
            Some(format!(
                "{header_bytes} bytes of response headers; at most {MAX_RESPONSE_HEADER_BYTES} may be sent"
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

    /// Re-checks an answer that came from a worker process as if the worker were hostile (its
    /// wasm escaped): an answer that contradicts itself becomes `worker_crashed`; messages, logs
    /// and figures are held to what the invocation's limits allow. The server applies it to
    /// every answer read from a worker, before [`Self::enforce_response_rules`].
    pub fn distrust(&mut self, limits: &crate::Limits) {
        let contradiction = match (&self.outcome, &self.response) {
            (Outcome::Ok, None) => Some("ok without a response"),
            (outcome, Some(_)) if !outcome.is_ok() => Some("a response with a failed outcome"),
            (Outcome::Cancelled { .. } | Outcome::Overloaded { .. }, _) => {
                Some("an outcome only the server gives")
            }
            _ => None,
        };
        if let Some(what) = contradiction {
            self.response = None;
            self.outcome = Outcome::WorkerCrashed {
                message: format!("the worker's answer was not well-formed: {what}"),
            };
        }
        match &mut self.outcome {
            Outcome::ScriptError { message, .. }
            | Outcome::Internal { message }
            | Outcome::WorkerCrashed { message } => cut_to(message, MAX_OUTCOME_MESSAGE),
            _ => {}
        }
        let mut room = u64::from(limits.max_log_bytes) + LOG_SLACK;
        let mut kept = 0;
        for line in &mut self.logs {
            let size = line.message.len() as u64;
            if size > room {
                break;
            }
            room -= size;
            kept += 1;
        }
        if kept < self.logs.len() {
            self.logs.truncate(kept);
            self.logs_truncated = true;
        }
        self.fuel_used = self.fuel_used.min(limits.fuel);
        self.peak_memory_bytes = self.peak_memory_bytes.min(limits.memory_bytes);
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

    #[test]
    fn log_levels_are_read_in_any_case() {
        for (given, level) in [
            ("info", LogLevel::Info),
            ("INFO", LogLevel::Info),
            ("Warning", LogLevel::Warn),
            ("ERROR", LogLevel::Error),
            ("Debug", LogLevel::Debug),
        ] {
            assert_eq!(LogLevel::parse(given), Some(level), "{given}");
        }
        assert_eq!(LogLevel::parse("loud"), None);
    }

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
    fn a_worker_answer_is_held_to_its_limits() {
        let limits = crate::Limits {
            max_log_bytes: 100,
            fuel: 10,
            memory_bytes: 1 << 20,
            ..crate::Limits::default()
        };
        let mut lying = answered(200, &[]);
        lying.fuel_used = u64::MAX;
        lying.peak_memory_bytes = u64::MAX;
        lying.logs = (0..100)
            .map(|_| LogLine {
                level: LogLevel::Info,
                message: "x".repeat(50),
            })
            .collect();
        lying.distrust(&limits);
        assert!(lying.outcome.is_ok());
        assert_eq!((lying.fuel_used, lying.peak_memory_bytes), (10, 1 << 20));
        let kept: usize = lying.logs.iter().map(|l| l.message.len()).sum();
        assert!(kept <= 100 + 1024, "{kept}");
        assert!(lying.logs_truncated);

        // An answer that contradicts itself is a crashed worker's.
        let mut contradiction = answered(200, &[]);
        contradiction.outcome = Outcome::Timeout { limit_ms: 1 };
        contradiction.distrust(&limits);
        assert_eq!(contradiction.outcome.kind(), "worker_crashed");
        assert!(contradiction.response.is_none());
        let mut empty = answered(200, &[]);
        empty.response = None;
        empty.distrust(&limits);
        assert_eq!(empty.outcome.kind(), "worker_crashed");
        let mut cancelled = answered(200, &[]);
        cancelled.response = None;
        cancelled.outcome = Outcome::Cancelled {
            message: String::new(),
        };
        cancelled.distrust(&limits);
        assert_eq!(cancelled.outcome.kind(), "worker_crashed");

        // A message cut on a character boundary.
        let mut long = answered(200, &[]);
        long.response = None;
        long.outcome = Outcome::ScriptError {
            message: "é".repeat(10_000),
            line: None,
            column: None,
        };
        long.distrust(&limits);
        let Outcome::ScriptError { message, .. } = &long.outcome else {
            panic!("{:?}", long.outcome)
        };
        assert!(message.len() <= MAX_OUTCOME_MESSAGE && message.starts_with('é'));
    }

    #[test]
    fn too_many_response_headers_are_a_script_error() {
        let names: Vec<String> = (0..=MAX_RESPONSE_HEADERS)
            .map(|i| format!("x-{i}"))
            .collect();
        let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        let mut many = answered(200, &headers);
        many.enforce_response_rules();
        assert_eq!(many.outcome.kind(), "script_error");
        let big = "v".repeat(MAX_RESPONSE_HEADER_BYTES);
        let mut large = answered(200, &[("x-big", &big)]);
        large.enforce_response_rules();
        assert_eq!(large.outcome.kind(), "script_error");
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
