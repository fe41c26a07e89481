//! The executor as a service of its own (cluster mode, DESIGN.md §1): `picloud-executor`
//! listens on a Unix socket and its node hands it invocations there, in the frames of
//! [`picloud_executor_protocol::wire`] (the node's side is
//! [`picloud_executor_protocol::ExecutorClient`]).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use picloud_executor_protocol::wire::{self, Answer, Ask};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::{Executor, HostCall, HostCalls, HostFuture, HostReply, InvocationContext};

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
    let mut frames = wire::framed(stream);
    let ask = match wire::receive::<Ask>(&mut frames).await {
        Ok(ask) => ask,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let message = format!("unreadable ask: {e}");
            return wire::send(&mut frames, &Answer::Refused { message }).await;
        }
        Err(e) => return Err(e),
    };
    let ask = match ask {
        Ask::Stats => {
            let answer = Answer::Stats {
                stats: executor.stats(),
                sandbox: executor.sandbox().cloned(),
            };
            return wire::send(&mut frames, &answer).await;
        }
        Ask::HostReply { .. } => {
            let message = "a host reply without a host call".to_string();
            return wire::send(&mut frames, &Answer::Refused { message }).await;
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
    loop {
        tokio::select! {
            result = &mut run => {
                let answer = Answer::Result { result: Box::new(result) };
                return wire::send(&mut frames, &answer).await;
            }
            // The node sends nothing unasked while a script runs: a read that ends is its
            // connection closing (its client went away and it dropped the invocation).
            // Returning drops the run, which kills the worker. The framed reader keeps what
            // it has read, so a host call's turn loses no byte.
            _ = frames.next() => {
                tracing::debug!("the orchestrator stopped waiting; the invocation is cancelled");
                return Ok(());
            }
            Some((call, reply)) = calls.recv() => {
                // On a broken connection the script gets an error reply and runs to its end.
                let answered = async {
                    wire::send(&mut frames, &Answer::HostCall { call }).await?;
                    match wire::receive::<Ask>(&mut frames).await? {
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
