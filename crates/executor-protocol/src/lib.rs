//! How an invocation reaches an executor, without the executor: the traits the node and the
//! control plane run scripts through, the frames of `picloud-executor`'s socket and the client
//! that speaks them. Nothing here compiles wasmtime, so the servers that only hand invocations
//! on (`picloud-orchestrator`, `picloud-manager`) do not either; `picloud-executor-core`
//! implements [`Execute`] and serves [`wire`].

mod client;
mod invoke;
pub mod wire;

pub use client::{ClientError, ExecutorClient};
pub use invoke::{
    Execute, Invocation, InvocationContext, InvokeFuture, Invoker, PoolStats, SandboxReport,
    default_total_memory,
};
pub use picloud_shared::host::{HostCall, HostCalls, HostFuture, HostReply};
