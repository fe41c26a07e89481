//! The node's side of `picloud-executor`'s socket.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use picloud_shared::host::HostReply;
use picloud_shared::{FunctionRef, InvocationRequest, InvocationResult, Limits};
use tokio::net::UnixStream;

use crate::wire::{self, Answer, Ask, InvokeAsk};
use crate::{InvocationContext, PoolStats, SandboxReport};

/// Why a remote invocation has no result, or the executor no figures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The executor could not be reached: the invocation did not run.
    #[error("the node's executor is unreachable: {0}")]
    Unreachable(io::Error),
    /// The executor failed or went away after the invocation was sent: it may have run.
    #[error("the node's executor failed during the invocation: {0}")]
    Lost(String),
    /// The executor was reached but did not tell its pool's figures.
    #[error("the node's executor did not tell its figures: {0}")]
    Silent(String),
}

/// Hands invocations to the node's `picloud-executor`.
#[derive(Debug, Clone)]
pub struct ExecutorClient {
    socket: PathBuf,
}

/// How much longer than the function's own timeout the client waits for an answer: the
/// executor enforces the timeout; this only catches an executor that hangs.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);

fn unexpected(answer: &Answer) -> io::Error {
    let what = match answer {
        Answer::HostCall { .. } => "a host call",
        Answer::Result { .. } => "a result",
        Answer::Stats { .. } => "figures",
        Answer::Refused { message } => {
            return io::Error::other(format!("it refused the ask: {message}"));
        }
    };
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("it answered {what} out of turn"),
    )
}

impl ExecutorClient {
    /// A client of the executor listening on `socket`. Connects per exchange, so an executor
    /// that restarts is found again without any reconnect logic.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs the invocation on the remote executor; its host calls are answered here, by
    /// `context`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unreachable`] when the executor could not be reached (the script did
    /// not run); [`ClientError::Lost`] when it went away or failed after the invocation was
    /// sent (it may have run: it is never sent again).
    pub async fn invoke_with(
        &self,
        owner: &FunctionRef,
        script: &str,
        request: &InvocationRequest,
        limits: &Limits,
        context: InvocationContext<'_>,
    ) -> Result<InvocationResult, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(ClientError::Unreachable)?;
        let wait = Duration::from_millis(limits.timeout_ms) + ANSWER_MARGIN;
        let run = Self::exchange_invoke(stream, owner, script, request, limits, context);
        match tokio::time::timeout(wait, run).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => Err(ClientError::Lost(e.to_string())),
            Err(_) => Err(ClientError::Lost(format!(
                "no answer within {} ms",
                wait.as_millis()
            ))),
        }
    }

    async fn exchange_invoke(
        stream: UnixStream,
        owner: &FunctionRef,
        script: &str,
        request: &InvocationRequest,
        limits: &Limits,
        context: InvocationContext<'_>,
    ) -> io::Result<InvocationResult> {
        let mut frames = wire::framed(stream);
        let ask = Ask::Invoke(Box::new(InvokeAsk {
            owner: owner.clone(),
            script: script.to_string(),
            request: request.clone(),
            limits: limits.clone(),
            env: context.env.cloned(),
            event: context.event.map(str::to_string),
            host: context.host.is_some(),
        }));
        wire::send(&mut frames, &ask).await?;
        loop {
            match wire::receive::<Answer>(&mut frames).await? {
                Answer::Result { result } => return Ok(*result),
                Answer::HostCall { call } => {
                    let reply = match &context.host {
                        Some(host) => host.call(call).await,
                        None => HostReply::error("host calls are not available here"),
                    };
                    wire::send(&mut frames, &Ask::HostReply { reply }).await?;
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// The remote pool's figures and sandbox.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unreachable`] when the executor cannot be reached,
    /// [`ClientError::Silent`] when it does not answer its figures within `within`.
    pub async fn stats(
        &self,
        within: Duration,
    ) -> Result<(PoolStats, Option<SandboxReport>), ClientError> {
        let ask = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(ClientError::Unreachable)?;
            let mut frames = wire::framed(stream);
            let silent = |e: io::Error| ClientError::Silent(e.to_string());
            wire::send(&mut frames, &Ask::Stats).await.map_err(silent)?;
            match wire::receive::<Answer>(&mut frames).await.map_err(silent)? {
                Answer::Stats { stats, sandbox } => Ok((stats, sandbox)),
                other => Err(silent(unexpected(&other))),
            }
        };
        tokio::time::timeout(within, ask).await.unwrap_or_else(|_| {
            Err(ClientError::Silent(format!(
                "no answer within {} ms",
                within.as_millis()
            )))
        })
    }
}
