//! Host calls: what a script asks of the platform while it runs (the tenant's key-value store).
//!
//! The guest encodes a [`HostCall`] as JSON and hands it to the host through the
//! [`crate::guest::IMPORT_CALL`] import; in process mode the worker forwards the bytes over its
//! channel to the server, which answers with a [`HostReply`]. Whoever answers was built for one
//! invocation of one function and is scoped to that function's tenant: a call never names a
//! tenant, so a script can only ever reach its own tenant's data.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// Most host calls one invocation may make; the next one fails with a script error.
pub const MAX_HOST_CALLS: u32 = 1_000;
/// Largest encoded call accepted from a guest (a key and a value with their framing).
pub const MAX_CALL_BYTES: usize = 1 << 20;
/// Largest encoded reply handed to a guest (a page of keys, or a value).
pub const MAX_REPLY_BYTES: usize = 4 << 20;

/// One request a script makes of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HostCall {
    KvGet {
        key: String,
    },
    /// `value` is the JSON text of the script's value.
    KvSet {
        key: String,
        value: String,
    },
    KvDelete {
        key: String,
    },
    /// Keys starting with `prefix`, in byte order, after `after` when given, at most `limit`.
    KvList {
        prefix: String,
        after: Option<String>,
        limit: u32,
    },
}

impl HostCall {
    /// The script-side name of the call, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::KvGet { .. } => "kv_get",
            Self::KvSet { .. } => "kv_set",
            Self::KvDelete { .. } => "kv_delete",
            Self::KvList { .. } => "kv_list",
        }
    }
}

/// The host's answer to a [`HostCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum HostReply {
    /// `kv_get`: the JSON text stored under the key, if any.
    Value { value: Option<String> },
    /// `kv_set` done.
    Done,
    /// `kv_delete`: whether the key existed.
    Deleted { existed: bool },
    /// `kv_list`: one page of keys.
    Keys { keys: Vec<String> },
    /// The call was refused or failed; the message is shown to the script's author.
    Error { message: String },
}

impl HostReply {
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
        }
    }
}

/// A future a [`HostCalls`] returns; boxed so that it can be a trait object.
pub type HostFuture<'a> = Pin<Box<dyn Future<Output = HostReply> + Send + 'a>>;

/// Answers the host calls of one invocation, already scoped to its function's tenant.
pub trait HostCalls: Send + Sync {
    fn call(&self, call: HostCall) -> HostFuture<'_>;
}
