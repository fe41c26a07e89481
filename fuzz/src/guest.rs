//! The guest ABI: an arbitrary script and request, through the real executor and guest.
//!
//! Input: `script \0 method \0 path \0 query and headers \0 body`, where the third part holds
//! `k=v` lines (`h:k=v` for a header). Properties: the host never panics, and every run ends
//! in a typed outcome that is not `internal` (a host bug); an `ok` answer is valid HTTP, with a
//! status from 200 to 599 and no framing header of the script's.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use picloud_executor_core::{Executor, ExecutorConfig, Isolation};
use picloud_shared::{InvocationRequest, Limits, Outcome};

/// Small limits, so that hostile inputs end quickly: 5·10⁷ fuel, 32 MiB, 2 s.
fn limits() -> Limits {
    Limits {
        fuel: 50_000_000,
        memory_bytes: 32 << 20,
        timeout_ms: 2_000,
        ..Limits::default()
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    executor: Executor,
}

/// One executor per process, in `instance` mode: the guest and host code are those of the
/// `process` mode, run where the fuzzer can see their coverage.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = crate::runtime();
        let config = ExecutorConfig::new(Isolation::Instance, crate::cache_dir());
        let executor = runtime
            .block_on(Executor::start(config))
            .expect("the executor starts");
        Harness { runtime, executor }
    })
}

/// The script and request `data` stands for.
pub fn decode(data: &[u8]) -> (String, InvocationRequest) {
    let p = crate::parts(data, 5);
    let (mut query, mut headers) = (BTreeMap::new(), BTreeMap::new());
    for line in crate::text(p[3]).lines() {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        match k.strip_prefix("h:") {
            Some(h) => headers.insert(h.to_string(), v.to_string()),
            None => query.insert(k.to_string(), v.to_string()),
        };
    }
    let method = crate::text(p[1]);
    let request = InvocationRequest {
        method: if method.is_empty() {
            "GET".into()
        } else {
            method
        },
        path: format!("/{}", crate::text(p[2])),
        query,
        headers,
        body: crate::text(p[4]),
    };
    (crate::text(p[0]), request)
}

/// Starts the harness (the fuzz targets call it before the first input).
pub fn warm_up() {
    harness();
}

/// Runs the check; returns the outcome's kind.
pub fn check(data: &[u8]) -> &'static str {
    let (script, request) = decode(data);
    let h = harness();
    let result = h
        .runtime
        .block_on(h.executor.invoke(&script, &request, &limits()));
    match &result.outcome {
        Outcome::Internal { message } => {
            panic!("a host failure for a tenant's input: {message}\nscript: {script:?}")
        }
        Outcome::Ok => {
            let response = result
                .response
                .as_ref()
                .expect("an ok outcome carries a response");
            assert!(
                (200..=599).contains(&response.status),
                "status {} reached the host",
                response.status
            );
            for (name, value) in &response.headers {
                assert!(
                    picloud_shared::response_header_allowed(name),
                    "a framing header reached the host: {name:?}"
                );
                assert!(
                    axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                        && axum::http::HeaderValue::from_str(value).is_ok(),
                    "an invalid header reached the host: {name:?}: {value:?}"
                );
            }
        }
        Outcome::ScriptError { message, .. } => {
            assert!(!message.is_empty(), "a script error without a message")
        }
        _ => {}
    }
    result.outcome.kind()
}
