//! `picloud serve`: the all-in-one server. It opens the store (embedded SQLite in the data
//! directory, or PostgreSQL), creates the admin token at first start, starts the executor, and
//! serves the management API (`/api/v1`), the function endpoints (`/fn/…`, from the
//! orchestrator's in-memory routing table) and health checks from one process tree.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use picloud_executor_core::{Executor, ExecutorConfig, InvocationContext, Isolation};
use picloud_manager_core::api::{
    ApiConfig, ApiState, InFlight, Invocation, InvokeFuture, Invoker, MetricsSource,
};
use picloud_manager_core::kv::{KvLimits, TenantKv};
use picloud_manager_core::schedules::{ScheduleObserver, Scheduler, SchedulerConfig};
use picloud_manager_core::{
    AnyStore, FunctionLimits, PgStore, RecordConfig, Recorder, SqliteStore, Store,
};
use picloud_orchestrator_core::{
    EndpointState, Ingress, IngressConfig, LocalRoutes, Metrics, PoolFigures, start_routing,
};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PICLOUD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the embedded database and the module cache live.
    #[arg(long, env = "PICLOUD_DATA_DIR", default_value = "./picloud-data")]
    pub data_dir: PathBuf,
    /// Where the compiled guest is cached. Default: `cache` in the data directory.
    #[arg(long, env = "PICLOUD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// PostgreSQL URL; without it PiCloud uses an SQLite file in the data directory.
    #[arg(long, env = "PICLOUD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Token chosen for the admin at first start (for automation); otherwise one is generated
    /// and printed once.
    #[arg(long, env = "PICLOUD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// `process` (a sandboxed process per invocation) or `instance` (in-process).
    #[arg(long, env = "PICLOUD_ISOLATION", default_value = "process")]
    pub isolation: Isolation,
    /// How long in-flight requests may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "PICLOUD_GRACE_SECONDS", default_value_t = 10)]
    pub grace_seconds: u64,
    /// The built dashboard (`200.html` and `_app/`). Default: `dashboard/build` in the working
    /// directory or in the repository the binary was built from; without one, `/` answers how
    /// to build it.
    #[arg(long, env = "PICLOUD_DASHBOARD_DIR")]
    pub dashboard_dir: Option<PathBuf>,
    /// Largest script a version may hold, in bytes (larger: 413).
    #[arg(long, env = "PICLOUD_MAX_SCRIPT_BYTES", default_value_t = ApiConfig::default().max_script_bytes)]
    pub max_script_bytes: usize,
    /// Largest request body the API and the function endpoints accept, in bytes (larger: 413).
    #[arg(long, env = "PICLOUD_MAX_BODY_BYTES", default_value_t = ApiConfig::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Invocations of one tenant's functions running at once (more wait, then 429).
    #[arg(long, env = "PICLOUD_TENANT_CONCURRENCY", default_value_t = IngressConfig::default().tenant_concurrency)]
    pub tenant_concurrency: u64,
    /// Requests per second to one function (more: 429); 0 = no limit.
    #[arg(long, env = "PICLOUD_FUNCTION_RATE", default_value_t = IngressConfig::default().function_rate)]
    pub function_rate: u32,
    /// Requests per second to one tenant's functions (more: 429); 0 = no limit.
    #[arg(long, env = "PICLOUD_TENANT_RATE", default_value_t = IngressConfig::default().tenant_rate)]
    pub tenant_rate: u32,
    /// How long a request may wait for a concurrency place before it is answered 429, in ms.
    #[arg(long, env = "PICLOUD_QUEUE_WAIT_MS", default_value_t = 100)]
    pub queue_wait_ms: u64,
    /// Invocation records waiting to be written; past this they are dropped and counted.
    #[arg(long, env = "PICLOUD_RECORDS_QUEUE", default_value_t = RecordConfig::default().queue)]
    pub records_queue: usize,
    /// Invocation records older than this many hours are deleted.
    #[arg(long, env = "PICLOUD_RECORDS_RETENTION_HOURS", default_value_t = 168)]
    pub records_retention_hours: u64,
    /// Invocation records kept per function, newest first.
    #[arg(long, env = "PICLOUD_RECORDS_PER_FUNCTION", default_value_t = RecordConfig::default().per_function)]
    pub records_per_function: u32,
    /// Keys one tenant's key-value store may hold.
    #[arg(long, env = "PICLOUD_KV_MAX_KEYS", default_value_t = KvLimits::default().max_keys)]
    pub kv_max_keys: u64,
    /// Bytes of keys and values one tenant's key-value store may hold.
    #[arg(long, env = "PICLOUD_KV_MAX_BYTES", default_value_t = KvLimits::default().max_bytes)]
    pub kv_max_bytes: u64,
    /// Largest value `kv_set` stores, in bytes of JSON.
    #[arg(long, env = "PICLOUD_KV_MAX_VALUE_BYTES", default_value_t = KvLimits::default().max_value_bytes)]
    pub kv_max_value_bytes: usize,
    /// Missed schedule ticks run after downtime: the most recent this many; older ones are
    /// skipped and counted. 0 skips them all.
    #[arg(long, env = "PICLOUD_SCHEDULE_BACKFILL", default_value_t = SchedulerConfig::default().backfill)]
    pub schedule_backfill: u32,
    /// How late (seconds) a schedule tick may start and still count as on time, not missed.
    #[arg(long, env = "PICLOUD_SCHEDULE_GRACE_SECONDS", default_value_t = SchedulerConfig::default().grace.as_secs())]
    pub schedule_grace_seconds: u64,
    /// How long past a schedule run's timeout its claim holds before another scheduler may
    /// take the schedule over (the run's server died), in seconds.
    #[arg(long, env = "PICLOUD_SCHEDULE_LEASE_MARGIN_SECONDS", default_value_t = SchedulerConfig::default().lease_margin.as_secs())]
    pub schedule_lease_margin_seconds: u64,
}

/// The endpoints' metrics with the executor's pool figures.
struct ServerMetrics {
    metrics: Arc<Metrics>,
    executor: Arc<Executor>,
    recorder: Arc<Recorder>,
}

impl MetricsSource for ServerMetrics {
    fn render(&self, tenant: Option<&str>) -> String {
        let stats = self.executor.stats();
        let pool = PoolFigures {
            warm: stats.warm as u64,
            busy: stats.busy as u64,
            cold_starts_total: stats.misses_total,
            records_queued: self.recorder.queued() as u64,
            records_dropped_total: self.recorder.dropped(),
        };
        self.metrics.render(pool, tenant)
    }
}

/// The executor as the API's and the endpoints' [`Invoker`]: each invocation gets its
/// function's variables and a key-value store scoped to its tenant.
struct ExecutorInvoker {
    executor: Arc<Executor>,
    store: AnyStore,
    kv: KvLimits,
}

impl Invoker for ExecutorInvoker {
    fn invoke<'a>(&'a self, call: Invocation<'a>) -> InvokeFuture<'a> {
        let context = InvocationContext {
            env: Some(call.env),
            host: Some(Arc::new(TenantKv::new(
                self.store.clone(),
                call.tenant_id,
                self.kv,
            ))),
            event: call.event,
        };
        Box::pin(self.executor.invoke_with(
            call.owner,
            call.script,
            call.request,
            call.limits,
            context,
        ))
    }
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            args.data_dir.display()
        )
    })?;
    let store = match &args.database_url {
        Some(url) => AnyStore::Postgres(PgStore::connect(url).await.context("opening PostgreSQL")?),
        None => {
            let path = args.data_dir.join("picloud.db");
            AnyStore::Sqlite(
                SqliteStore::open(&path)
                    .await
                    .with_context(|| format!("opening {}", path.display()))?,
            )
        }
    };
    if let Some(token) =
        picloud_manager_core::auth::bootstrap_admin(&store, args.admin_token.as_deref()).await?
    {
        println!(
            "Created the admin token (shown once, only its hash is stored):\n\n    {token}\n\n\
             Use it as `Authorization: Bearer <token>` or `export PICLOUD_TOKEN=<token>` for the CLI."
        );
    }
    let mut config = ExecutorConfig::new(
        args.isolation,
        args.cache_dir
            .clone()
            .unwrap_or_else(|| args.data_dir.join("cache")),
    );
    // The executor must allow what the highest ceiling lets a function choose.
    config.max_memory_bytes = config
        .max_memory_bytes
        .max(FunctionLimits::CEILING.memory_bytes);
    let executor = Arc::new(
        Executor::start(config)
            .await
            .context("starting the executor")?,
    );
    let metrics = Arc::new(Metrics::new());
    let table = start_routing(store.clone(), Arc::clone(&metrics))
        .await
        .context("loading the routing table")?;
    let recorder = Recorder::start(
        store.clone(),
        RecordConfig {
            queue: args.records_queue,
            retention: Duration::from_secs(args.records_retention_hours * 3600),
            per_function: args.records_per_function,
            ..RecordConfig::default()
        },
    );
    let metrics_source = Arc::new(ServerMetrics {
        metrics: Arc::clone(&metrics),
        executor: Arc::clone(&executor),
        recorder: Arc::clone(&recorder),
    });
    let invoker: Arc<dyn Invoker> = Arc::new(ExecutorInvoker {
        executor,
        store: store.clone(),
        kv: KvLimits {
            max_keys: args.kv_max_keys,
            max_bytes: args.kv_max_bytes,
            max_value_bytes: args.kv_max_value_bytes,
            ..KvLimits::default()
        },
    });
    let scheduler = Scheduler::start(
        store.clone(),
        Arc::clone(&invoker),
        Arc::clone(&recorder),
        metrics as Arc<dyn ScheduleObserver>,
        SchedulerConfig {
            backfill: args.schedule_backfill,
            grace: Duration::from_secs(args.schedule_grace_seconds),
            lease_margin: Duration::from_secs(args.schedule_lease_margin_seconds),
        },
    )
    .await
    .context("loading the schedules")?;
    let in_flight = Arc::new(InFlight::default());
    let endpoints = EndpointState {
        table: Arc::clone(&table),
        store: store.clone(),
        invoker: Arc::clone(&invoker),
        ingress: Arc::new(Ingress::new(
            IngressConfig {
                tenant_concurrency: args.tenant_concurrency,
                function_rate: args.function_rate,
                tenant_rate: args.tenant_rate,
                queue_wait: Duration::from_millis(args.queue_wait_ms),
            },
            Arc::clone(&in_flight),
        )),
        recorder: Arc::clone(&recorder),
        max_body_bytes: args.max_body_bytes,
    };
    let state = ApiState {
        routes: Some(Arc::new(LocalRoutes {
            table,
            store: store.clone(),
        })),
        metrics: Some(Arc::clone(&metrics_source) as Arc<dyn MetricsSource>),
        recorder: Some(Arc::clone(&recorder)),
        store,
        invoker,
        in_flight,
        config: ApiConfig {
            max_script_bytes: args.max_script_bytes,
            max_body_bytes: args.max_body_bytes,
        },
    };
    let dashboard = picloud_manager_core::dashboard::locate(args.dashboard_dir.as_deref());
    match &dashboard {
        Some(dir) => tracing::info!(dir = %dir.display(), "serving the dashboard"),
        None => tracing::warn!(
            "the dashboard is not built (or --dashboard-dir holds no 200.html): / says how to build it"
        ),
    }
    let app = app(state, endpoints, metrics_source, dashboard.as_deref());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("PiCloud listening on http://{}", listener.local_addr()?);
    let grace = Duration::from_secs(args.grace_seconds);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    // After the signal, in-flight requests get `grace` to finish; then the process exits.
    let mut stop_rx = stop_rx;
    tokio::select! {
        served = server => served.context("serving")?,
        () = async {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("the grace period ended with requests still running"),
    }
    // Schedule runs in progress finish (they are bounded by their function's timeout).
    if !scheduler.stop(grace).await {
        tracing::warn!("schedule runs still in progress at exit");
    }
    // The writer batches records for up to a tenth of a second: write the last ones.
    if !recorder.flush(Duration::from_secs(5)).await {
        tracing::warn!("invocation records still unwritten at exit");
    }
    Ok(())
}

/// The whole HTTP surface: API, function endpoints, health checks, the dashboard for every
/// other path; JSON 404 for unknown paths under `/api/` and `/fn/`.
fn app(
    state: ApiState,
    endpoints: EndpointState,
    metrics: Arc<ServerMetrics>,
    dashboard: Option<&std::path::Path>,
) -> Router {
    let health = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state.clone());
    // Everything, for the operator's Prometheus; Caddy keeps it off the public routes.
    let operator = Router::new().route(
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
    );
    picloud_manager_core::api::router(state)
        .merge(picloud_orchestrator_core::router(endpoints))
        .merge(health)
        .merge(operator)
        .fallback_service(picloud_manager_core::dashboard::router(dashboard))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

async fn ready(State(state): State<ApiState>) -> Response {
    match state.store.list_tenants().await {
        Ok(_) => "ready".into_response(),
        Err(e) => {
            tracing::error!(error = %e, "readiness: the store does not answer");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the database does not answer",
            )
        }
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "kind": kind, "message": message } });
    (status, axum::Json(body)).into_response()
}
