//! What the servers are made of: `picloud serve` (all in one process tree), and in cluster mode
//! `picloud-orchestrator` (one per node) and `picloud-manager`. Each is a thin composition of
//! these parts, so that the three share one implementation of each.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use picloud_edge::MetricsSource;
use picloud_executor_protocol::{
    Execute, ExecutorClient, Invocation, InvocationContext, InvokeFuture, Invoker, PoolStats,
};
use picloud_shared::{FunctionRef, InvocationRequest, InvocationResult, Limits, Outcome};
use picloud_store::kv::{KvLimits, KvRate, TenantKv};
use picloud_store::{AnyStore, Recorder};

use crate::{Metrics, PoolFigures};

/// How often a node asks its executor for its figures; an executor silent for three times
/// this is unhealthy.
const POLL: Duration = Duration::from_secs(1);

/// Who runs this process's invocations: an executor in this process tree (`picloud serve`),
/// or the node's `picloud-executor` over its Unix socket.
#[derive(Debug)]
pub enum Runner {
    Local(Arc<dyn Execute>),
    Remote(Remote),
}

/// A `picloud-executor` and what was last heard of it.
#[derive(Debug)]
pub struct Remote {
    client: ExecutorClient,
    seen: Mutex<Option<(Instant, PoolStats)>>,
}

impl Runner {
    pub fn local(executor: Arc<dyn Execute>) -> Arc<Self> {
        Arc::new(Self::Local(executor))
    }

    /// The executor on `client`'s socket, asked for its figures every second for as long as
    /// the runtime runs (those are the node's pool metrics and its health).
    pub fn remote(client: ExecutorClient) -> Arc<Self> {
        let runner = Arc::new(Self::Remote(Remote {
            client,
            seen: Mutex::new(None),
        }));
        let weak = Arc::downgrade(&runner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(runner) = weak.upgrade() else { return };
                let Self::Remote(remote) = &*runner else {
                    return;
                };
                match remote.client.stats(POLL).await {
                    Ok((stats, _)) => {
                        if let Ok(mut seen) = remote.seen.lock() {
                            *seen = Some((Instant::now(), stats));
                        }
                    }
                    Err(e) => {
                        remote.forget();
                        tracing::warn!(
                            socket = %remote.client.socket().display(),
                            error = %e,
                            "the node's executor does not answer"
                        );
                    }
                }
            }
        });
        runner
    }

    /// The pool's figures: the local pool's, or the remote one's as last heard (zero when
    /// it is not answering).
    pub fn stats(&self) -> PoolStats {
        match self {
            Self::Local(executor) => executor.stats(),
            Self::Remote(remote) => remote.fresh().unwrap_or_default(),
        }
    }

    /// Whether invocations can run: always for a local executor; for a remote one, whether it
    /// answered its last poll (within three seconds) and no invocation has failed to reach it
    /// since.
    pub fn healthy(&self) -> bool {
        match self {
            Self::Local(_) => true,
            Self::Remote(remote) => remote.fresh().is_some(),
        }
    }

    async fn invoke_with(
        &self,
        owner: &FunctionRef,
        script: &str,
        request: &InvocationRequest,
        limits: &Limits,
        context: InvocationContext<'_>,
    ) -> InvocationResult {
        match self {
            Self::Local(executor) => {
                executor
                    .execute(owner, script, request, limits, context)
                    .await
            }
            Self::Remote(remote) => {
                let started = Instant::now();
                match remote
                    .client
                    .invoke_with(owner, script, request, limits, context)
                    .await
                {
                    Ok(result) => result,
                    Err(e) => {
                        // Unhealthy from now on, not from the next poll: a scheduler stops
                        // claiming ticks at once.
                        remote.forget();
                        tracing::error!(socket = %remote.client.socket().display(), error = %e, "invocation failed");
                        InvocationResult::failed(
                            Outcome::Internal {
                                message: e.to_string(),
                            },
                            started.elapsed(),
                        )
                    }
                }
            }
        }
    }
}

impl Remote {
    fn forget(&self) {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = None;
        }
    }

    fn fresh(&self) -> Option<PoolStats> {
        let seen = self.seen.lock().ok()?;
        let (at, stats) = seen.as_ref()?;
        (at.elapsed() < POLL * 3).then(|| stats.clone())
    }
}

/// The executor as the API's and the endpoints' [`Invoker`]: each invocation gets its
/// function's variables and a key-value store scoped to its tenant.
#[derive(Debug)]
pub struct ExecutorInvoker {
    pub runner: Arc<Runner>,
    pub store: AnyStore,
    pub kv: KvLimits,
    /// Every tenant's key-value call rate, shared by all invocations.
    pub kv_rate: Arc<KvRate>,
}

impl Invoker for ExecutorInvoker {
    fn invoke<'a>(&'a self, call: Invocation<'a>) -> InvokeFuture<'a> {
        let context = InvocationContext {
            env: Some(call.env),
            host: Some(Arc::new(
                TenantKv::new(self.store.clone(), call.tenant_id, self.kv)
                    .with_rate(Arc::clone(&self.kv_rate)),
            )),
            event: call.event,
        };
        Box::pin(self.runner.invoke_with(
            call.owner,
            call.script,
            call.request,
            call.limits,
            context,
        ))
    }

    fn ready(&self) -> bool {
        self.runner.healthy()
    }
}

/// This process's metrics: its endpoints' series with the pool figures of its executor and
/// the state of its record queue.
#[derive(Debug)]
pub struct NodeMetrics {
    pub metrics: Arc<Metrics>,
    pub runner: Arc<Runner>,
    pub recorder: Arc<Recorder>,
    /// The data directory, whose file system's free space is a metric (for the operator only).
    pub disk: DiskWatch,
}

/// The file system of a data directory: its free space, a metric and a readiness condition
/// (records, the spool and SQLite all write there; a tenant's flood must not fill it unseen).
#[derive(Debug, Clone)]
pub struct DiskWatch {
    pub dir: std::path::PathBuf,
    /// Below this many free bytes the server is not ready. Default 256 MiB.
    pub min_free: u64,
}

impl DiskWatch {
    /// Bytes free to an unprivileged writer, if the file system answers.
    // The field types are 32-bit on some targets (an armv7 Pi), 64-bit here.
    #[allow(clippy::useless_conversion)]
    pub fn free(&self) -> Option<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        Some(u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size())))
    }
}

impl MetricsSource for NodeMetrics {
    fn render(&self, tenant: Option<&str>) -> String {
        let stats = self.runner.stats();
        let pool = PoolFigures {
            warm: stats.warm as u64,
            busy: stats.busy as u64,
            cold_starts_total: stats.misses_total,
            records_queued: self.recorder.queued() as u64,
            records_dropped_total: self.recorder.dropped(),
            records_rejected_total: self.recorder.rejected(),
        };
        let mut text = self.metrics.render(pool, tenant);
        if tenant.is_none()
            && let Some(free) = self.disk.free()
        {
            text.push_str(&format!(
                "# HELP picloud_disk_free_bytes Bytes free on the file system of the data directory.\n\
                 # TYPE picloud_disk_free_bytes gauge\n\
                 picloud_disk_free_bytes {free}\n"
            ));
        }
        text
    }
}

/// What every server builds around its executor: the record writer (journalled in
/// `<data_dir>/records-spool`), the invoker and the metrics.
#[derive(Debug)]
pub struct Parts {
    pub recorder: Arc<Recorder>,
    pub invoker: Arc<ExecutorInvoker>,
    pub metrics: Arc<NodeMetrics>,
}

impl Parts {
    /// # Errors
    ///
    /// When the record spool cannot be opened.
    pub fn assemble(
        store: &AnyStore,
        runner: Arc<Runner>,
        metrics: Arc<Metrics>,
        records: &crate::args::RecordArgs,
        kv: KvLimits,
        data_dir: &std::path::Path,
    ) -> io::Result<Self> {
        picloud_daemon::private_dir(data_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the data directory {}: {e}", data_dir.display()),
            )
        })?;
        let spool = data_dir.join("records-spool");
        let recorder = Recorder::start(store.clone(), records.config(Some(spool.clone())))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("the record spool {}: {e}", spool.display()),
                )
            })?;
        let metrics = Arc::new(NodeMetrics {
            metrics,
            runner: Arc::clone(&runner),
            recorder: Arc::clone(&recorder),
            disk: DiskWatch {
                dir: data_dir.to_path_buf(),
                min_free: records.min_free_disk,
            },
        });
        let invoker = Arc::new(ExecutorInvoker {
            runner,
            store: store.clone(),
            kv_rate: Arc::new(KvRate::new(kv.ops_per_second)),
            kv,
        });
        Ok(Self {
            recorder,
            invoker,
            metrics,
        })
    }
}

/// Why the secret key could not be put to use.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Key(#[from] picloud_store::secrets::SecretError),
    #[error(transparent)]
    Store(#[from] picloud_store::StoreError),
}

/// `store`, sealing and opening secret variables with the key at `path` (default:
/// `secret.key` in `data_dir`; made there at first
/// start when `create` is set, as the all-in-one server and the manager do; a cluster's nodes
/// are given the manager's). Secrets stored in the clear are sealed now, and every sealed one
/// must open with this key: a start with the wrong key stops here, saying so.
///
/// # Errors
///
/// When the key cannot be read or made, or does not open the secrets in the database.
pub async fn with_secret_key(
    store: AnyStore,
    path: Option<&std::path::Path>,
    data_dir: &std::path::Path,
    create: bool,
) -> Result<AnyStore, SealError> {
    let default = data_dir.join("secret.key");
    let path = path.unwrap_or(&default);
    let key = picloud_store::secrets::KeySource::new(path, create)?;
    if key.key().is_none() {
        tracing::warn!(
            path = %path.display(),
            "no secret key file yet: functions' secret variables open once it is there (the manager's, copied)"
        );
    }
    let store = store.with_secret_key(Some(Arc::new(key)));
    let sealed = store.seal_secrets().await?;
    if sealed > 0 {
        tracing::info!(sealed, "sealed secret variables stored in the clear");
    }
    Ok(store)
}

#[derive(Clone)]
struct Ops {
    store: AnyStore,
    runner: Option<Arc<Runner>>,
    disk: Option<DiskWatch>,
}

/// `/healthz` (the process answers), `/readyz` (the database answers and, where given, the
/// executor) and `/metrics` (everything, for the operator's Prometheus; Caddy keeps it off the
/// public routes).
pub fn ops_router(
    store: AnyStore,
    metrics: Arc<dyn MetricsSource>,
    runner: Option<Arc<Runner>>,
    disk: Option<DiskWatch>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(Ops {
            store,
            runner,
            disk,
        })
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render(None),
                    )
                }
            }),
        )
}

async fn ready(State(ops): State<Ops>) -> Response {
    if let Some(disk) = &ops.disk
        && disk.free().is_some_and(|free| free < disk.min_free)
    {
        return not_ready("the data directory's disk is nearly full");
    }
    if let Some(runner) = &ops.runner
        && !runner.healthy()
    {
        return not_ready("the executor does not answer");
    }
    match ops.store.list_tenants().await {
        Ok(_) => "ready".into_response(),
        Err(e) => {
            tracing::error!(error = %e, "readiness: the store does not answer");
            not_ready("the database does not answer")
        }
    }
}

fn not_ready(message: &str) -> Response {
    let body = serde_json::json!({ "error": { "kind": "not_ready", "message": message } });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

pub use crate::listen::serve_until_signal;
