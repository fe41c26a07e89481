//! The executor as a service of its own (cluster mode, DESIGN.md §1): `picloud-executor`
//! listens on a Unix socket and its node's orchestrator hands it invocations there.
//!
//! One connection carries one exchange. For an invocation: the orchestrator sends
//! [`Ask::Invoke`]; while the script runs, the executor relays each of its host calls back as
//! [`Answer::HostCall`] and waits for the orchestrator's [`Ask::HostReply`]; the last frame is
//! [`Answer::Result`]. The executor thus holds no database connection and no credential: the
//! tenant's key-value store is reached only through the orchestrator that asked, scoped to the
//! invocation's tenant there. [`Ask::Stats`] answers the pool's figures (and is the health check).
//!
//! Frames are those of the worker channel: a little-endian `u32` length, then JSON.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use picloud_shared::{FunctionRef, InvocationRequest, InvocationResult, Limits};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::process::wire::{MAX_FRAME, frame, read_frame_async};
use crate::{
    Executor, ExecutorError, HostCall, HostCalls, HostFuture, HostReply, InvocationContext,
    PoolStats, SandboxReport,
};

/// What the orchestrator sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ask {
    Invoke(Box<InvokeAsk>),
    HostReply { reply: HostReply },
    Stats,
}

/// One invocation, with everything the executor needs to run it.
#[derive(Debug, Serialize, Deserialize)]
pub struct InvokeAsk {
    pub owner: FunctionRef,
    pub script: String,
    pub request: InvocationRequest,
    pub limits: Limits,
    pub env: Option<BTreeMap<String, String>>,
    pub event: Option<String>,
    /// Whether the orchestrator answers host calls; without, each fails with a clear error.
    pub host: bool,
}

/// What the executor sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    HostCall {
        call: HostCall,
    },
    Result {
        result: Box<InvocationResult>,
    },
    Stats {
        stats: PoolStats,
        sandbox: Option<SandboxReport>,
    },
    /// The ask could not be read.
    Refused {
        message: String,
    },
}

async fn send(w: &mut (impl AsyncWrite + Unpin), message: &impl Serialize) -> io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
    w.write_all(&frame(&[&bytes])).await
}

async fn receive<T: for<'de> Deserialize<'de>>(r: &mut (impl AsyncRead + Unpin)) -> io::Result<T> {
    let bytes = read_frame_async(r, MAX_FRAME).await?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Binds the executor's socket, readable and writable by its owner and group only. A socket
/// file left by an executor that died is replaced; one an executor still listens on is not.
///
/// # Errors
///
/// When another executor answers on `path`, or the socket cannot be created.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("an executor already listens on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        // Made here, it is traversable by the socket's group (the orchestrator may run as
        // another user of it), whatever the process's umask.
        std::fs::create_dir_all(dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves invocations on `listener` until `stop` resolves, then waits up to `grace` for the
/// exchanges in progress. Returns whether they all finished.
pub async fn serve(
    listener: UnixListener,
    executor: Arc<Executor>,
    stop: impl std::future::Future<Output = ()>,
    grace: Duration,
) -> bool {
    // Every exchange in progress, so that a stop can wait for them without polling.
    let exchanges = tokio_util::task::TaskTracker::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let executor = Arc::clone(&executor);
                    exchanges.spawn(async move {
                        if let Err(e) = exchange(stream, &executor).await {
                            tracing::debug!(error = %e, "an exchange with the orchestrator ended early");
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors, say: do not spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    exchanges.close();
    tokio::time::timeout(grace, exchanges.wait()).await.is_ok()
}

/// Host calls of one invocation, relayed to the connection's task (which owns the socket).
struct Relay(mpsc::Sender<(HostCall, oneshot::Sender<HostReply>)>);

impl HostCalls for Relay {
    fn call(&self, call: HostCall) -> HostFuture<'_> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            if self.0.send((call, tx)).await.is_err() {
                return HostReply::error("the orchestrator went away");
            }
            rx.await
                .unwrap_or_else(|_| HostReply::error("the orchestrator went away"))
        })
    }
}

async fn exchange(stream: UnixStream, executor: &Executor) -> io::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let ask = match receive::<Ask>(&mut rd).await {
        Ok(ask) => ask,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let message = format!("unreadable ask: {e}");
            return send(&mut wr, &Answer::Refused { message }).await;
        }
        Err(e) => return Err(e),
    };
    let ask = match ask {
        Ask::Stats => {
            let answer = Answer::Stats {
                stats: executor.stats(),
                sandbox: executor.sandbox().cloned(),
            };
            return send(&mut wr, &answer).await;
        }
        Ask::HostReply { .. } => {
            let message = "a host reply without a host call".to_string();
            return send(&mut wr, &Answer::Refused { message }).await;
        }
        Ask::Invoke(ask) => ask,
    };
    let (calls_tx, mut calls) = mpsc::channel(1);
    let context = InvocationContext {
        env: ask.env.as_ref(),
        host: ask
            .host
            .then(|| Arc::new(Relay(calls_tx)) as Arc<dyn HostCalls>),
        event: ask.event.as_deref(),
    };
    let run = executor.invoke_with(&ask.owner, &ask.script, &ask.request, &ask.limits, context);
    tokio::pin!(run);
    let mut unasked = [0u8; 1];
    loop {
        tokio::select! {
            result = &mut run => {
                let answer = Answer::Result { result: Box::new(result) };
                return send(&mut wr, &answer).await;
            }
            // The orchestrator sends nothing unasked while a script runs: a read that ends is
            // its connection closing (its client went away and it dropped the invocation).
            // Returning drops the run, which kills the worker. `read` is cancel-safe, so a
            // host call's turn loses no byte.
            _ = rd.read(&mut unasked) => {
                tracing::debug!("the orchestrator stopped waiting; the invocation is cancelled");
                return Ok(());
            }
            Some((call, reply)) = calls.recv() => {
                // On a broken connection the script gets an error reply and runs to its end.
                let answered = async {
                    send(&mut wr, &Answer::HostCall { call }).await?;
                    match receive::<Ask>(&mut rd).await? {
                        Ask::HostReply { reply } => Ok(reply),
                        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "expected a host reply")),
                    }
                }
                .await;
                let _ = reply.send(answered.unwrap_or_else(|e| {
                    HostReply::error(format!("the orchestrator went away: {e}"))
                }));
            }
        }
    }
}

/// Why a remote invocation has no result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The executor could not be reached: the invocation did not run.
    #[error("the node's executor is unreachable: {0}")]
    Unreachable(io::Error),
    /// The executor failed or went away after the invocation was sent: it may have run.
    #[error("the node's executor failed during the invocation: {0}")]
    Lost(String),
}

/// The orchestrator's side: hands invocations to the node's `picloud-executor`.
#[derive(Debug, Clone)]
pub struct ExecutorClient {
    socket: PathBuf,
}

/// How much longer than the function's own timeout the client waits for an answer: the
/// executor enforces the timeout; this only catches an executor that hangs.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);

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

    /// As [`Executor::invoke_with`], run by the remote executor.
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
    ) -> Result<InvocationResult, ExecutorError> {
        let (mut rd, mut wr) = stream.into_split();
        let ask = Ask::Invoke(Box::new(InvokeAsk {
            owner: owner.clone(),
            script: script.to_string(),
            request: request.clone(),
            limits: limits.clone(),
            env: context.env.cloned(),
            event: context.event.map(str::to_string),
            host: context.host.is_some(),
        }));
        send(&mut wr, &ask).await?;
        loop {
            match receive::<Answer>(&mut rd).await? {
                Answer::Result { result } => return Ok(*result),
                Answer::HostCall { call } => {
                    let reply = match &context.host {
                        Some(host) => host.call(call).await,
                        None => HostReply::error("host calls are not available here"),
                    };
                    send(&mut wr, &Ask::HostReply { reply }).await?;
                }
                Answer::Refused { message } => return Err(ExecutorError::Guest(message)),
                Answer::Stats { .. } => {
                    return Err(ExecutorError::Guest("an unexpected answer".into()));
                }
            }
        }
    }

    /// The remote pool's figures and sandbox; an error when the executor does not answer
    /// within `within`.
    ///
    /// # Errors
    ///
    /// When the executor cannot be reached or answers something else.
    pub async fn stats(
        &self,
        within: Duration,
    ) -> Result<(PoolStats, Option<SandboxReport>), ExecutorError> {
        let ask = async {
            let mut stream = UnixStream::connect(&self.socket).await?;
            send(&mut stream, &Ask::Stats).await?;
            match receive::<Answer>(&mut stream).await? {
                Answer::Stats { stats, sandbox } => Ok((stats, sandbox)),
                _ => Err(ExecutorError::Guest("an unexpected answer".into())),
            }
        };
        tokio::time::timeout(within, ask)
            .await
            .map_err(|_| ExecutorError::Io(io::Error::from(io::ErrorKind::TimedOut)))?
    }
}
