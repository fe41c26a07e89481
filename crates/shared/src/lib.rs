//! Types that cross a boundary in PiCloud: between the services, between the server and a worker
//! process, and between the host and the wasm guest. Keeping them in one small crate (serde
//! only, builds for `wasm32-wasip1` too) means the guest and the host can never disagree on a
//! field.

pub mod guest;
pub mod host;
mod invocation;
mod limits;
pub mod nesting;

pub use invocation::{
    DROPPED_RESPONSE_HEADERS, FunctionRef, InvocationRequest, InvocationResponse, InvocationResult,
    LogLevel, LogLine, Outcome, response_header_allowed,
};
pub use limits::{Limits, MAX_CALL_LEVELS_CEILING, MAX_MEMORY_BYTES_CEILING, ScriptLimits};
