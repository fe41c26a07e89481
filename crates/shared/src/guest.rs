//! The host ⇄ guest ABI. The guest is a reactor module (no `_start`) that exports:
//!
//! * [`EXPORT_ALLOC`]`(len: i32) -> i32`: a buffer of `len` bytes for the input;
//! * [`EXPORT_RUN`]`(ptr: i32, len: i32) -> i64`: runs one invocation whose [`GuestInput`] is the
//!   JSON at `ptr..ptr+len`; returns `(out_ptr << 32) | out_len` of a JSON [`GuestOutput`];
//! * `memory`.
//!
//! It imports from [`IMPORT_MODULE`]:
//!
//! * [`IMPORT_LOG`]`(level: i32, ptr: i32, len: i32)`, so that log lines reach the host as they
//!   are written and survive a trap;
//! * [`IMPORT_CALL`]`(ptr: i32, len: i32) -> i32`: makes the host call whose
//!   [`crate::host::HostCall`] JSON is at `ptr..ptr+len` and returns the length of the
//!   [`crate::host::HostReply`] JSON, which [`IMPORT_REPLY`]`(ptr: i32, len: i32)` then copies
//!   into the guest's buffer;
//!
//! plus a handful of WASI preview 1 functions that the host answers without granting anything
//! (the clock and `random_get` are answered: they are what `now()` and `random()` read).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{InvocationRequest, InvocationResponse, ScriptLimits};

pub const EXPORT_ALLOC: &str = "picloud_alloc";
pub const EXPORT_RUN: &str = "picloud_run";
pub const EXPORT_MEMORY: &str = "memory";
/// The function wizer runs at build time to construct the Rhai engine into the snapshot.
pub const EXPORT_INIT: &str = "picloud_init";
pub const IMPORT_MODULE: &str = "picloud";
pub const IMPORT_LOG: &str = "log";
pub const IMPORT_CALL: &str = "call";
pub const IMPORT_REPLY: &str = "reply";

/// What the host hands the guest for one invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestInput {
    pub script: String,
    pub request: InvocationRequest,
    pub limits: ScriptLimits,
    /// The function's variables and secrets, for `env(name)`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A schedule's tick, as JSON: when set, the guest calls `on_schedule(event)` with it
    /// instead of `handle(req)` (and `request` is not used).
    #[serde(default)]
    pub event: Option<String>,
}

/// What the guest hands back when it did not trap.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum GuestOutput {
    Response(InvocationResponse),
    Error(GuestError),
}

/// Why a script failed inside the guest, classified so the host can pick the [`crate::Outcome`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestError {
    pub kind: GuestErrorKind,
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestErrorKind {
    /// Compile error, thrown value, runtime error, bad return value.
    Script,
    /// Rhai's operation limit.
    Operations,
    /// Rhai's string / array / map size limits.
    DataTooLarge,
    /// Rhai's call-level limit.
    StackOverflow,
    /// The guest could not read its input: a host bug.
    Internal,
}
