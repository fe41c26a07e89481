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
use clap::Args;
use picloud_control::api::{ApiState, InFlight, Invoker, MetricsSource};
use picloud_control::args::SizeArgs;
use picloud_control::auth::announce_admin;
use picloud_edge::start_tokens;
use picloud_executor_core::args::ExecutorArgs;
use picloud_executor_core::{Executor, ExecutorConfig, Isolation};
use picloud_node::args::{HostArgs, IngressArgs, KvArgs, RecordArgs, ScheduleArgs};
use picloud_node::hosts::tls_ask_router;
use picloud_node::listen::ListenArgs;
use picloud_node::scheduler::{ScheduleObserver, Scheduler};
use picloud_node::server::{NodeMetrics, Parts, Runner, ops_router, serve_until_signal};
use picloud_node::{
    EndpointState, FunctionHosts, Ingress, LocalRoutes, Metrics, route_by_host, start_routing,
};
use picloud_store::{AnyStore, PgStore, SqliteStore};

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
    /// The key that seals functions' secret variables in the database (made at first start,
    /// mode 0600; back it up). Default: `secret.key` in the data directory.
    #[arg(long, env = "PICLOUD_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
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
    #[command(flatten)]
    pub listen_limits: ListenArgs,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    #[command(flatten)]
    pub hosts: HostArgs,
    #[command(flatten)]
    pub sizes: SizeArgs,
    #[command(flatten)]
    pub ingress: IngressArgs,
    #[command(flatten)]
    pub records: RecordArgs,
    #[command(flatten)]
    pub kv: KvArgs,
    #[command(flatten)]
    pub schedules: ScheduleArgs,
}

/// A server built but not yet listening: its whole HTTP surface, and what must be stopped
/// after it. The fuzz targets drive [`Server::app`] in-process.
pub struct Server {
    pub app: Router,
    scheduler: Scheduler,
    recorder: Arc<picloud_store::records::Recorder>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// Lets schedule runs in progress finish (each bounded by its function's timeout, and by
    /// `grace`) and writes the last invocation records.
    pub async fn finish(self, grace: Duration) {
        if !self.scheduler.stop(grace).await {
            tracing::warn!("schedule runs still in progress at exit");
        }
        // The writer batches records for up to a tenth of a second: write the last ones.
        if !self.recorder.flush(Duration::from_secs(5)).await {
            tracing::warn!("invocation records still unwritten at exit");
        }
    }
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> Result<()> {
    // The address first: a start that cannot listen must not make (and print) the one-time
    // admin token, which the next start would then never show.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let server = build(&args).await?;
    let stop = picloud_daemon::shutdown_signal();
    println!("PiCloud listening on http://{}", listener.local_addr()?);
    let grace = Duration::from_secs(args.grace_seconds);
    serve_until_signal(
        listener,
        server.app.clone(),
        grace,
        &args
            .listen_limits
            .config(args.sizes.max_body_bytes.max(args.sizes.max_script_bytes)),
        stop,
    )
    .await
    .context("serving")?;
    server.finish(grace).await;
    Ok(())
}

/// The store of a server on `data_dir`: PostgreSQL at `database_url`, else the embedded
/// `picloud.db` there. With `must_exist`, a missing embedded database is an error instead of a
/// new, empty one (`picloud admin` works on an installation, never makes one).
pub(crate) async fn open_store(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
    must_exist: bool,
) -> Result<AnyStore> {
    if let Some(url) = database_url {
        return Ok(AnyStore::Postgres(
            PgStore::connect(url).await.context("opening PostgreSQL")?,
        ));
    }
    let path = data_dir.join("picloud.db");
    if must_exist && !path.is_file() {
        anyhow::bail!(
            "no database at {}: give the server's --data-dir (or --database-url when it runs on \
             PostgreSQL)",
            path.display()
        );
    }
    Ok(AnyStore::Sqlite(
        SqliteStore::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?,
    ))
}

/// Opens the store (creating the admin token at first start), starts the executor, the routing
/// table, the record writer and the scheduler, and assembles the HTTP surface.
pub async fn build(args: &ServeArgs) -> Result<Server> {
    picloud_daemon::private_files();
    picloud_daemon::private_dir(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            args.data_dir.display()
        )
    })?;
    let store = open_store(args.database_url.as_deref(), &args.data_dir, false).await?;
    let store = picloud_node::server::with_secret_key(
        store,
        args.secret_key_file.as_deref(),
        &args.data_dir,
        true,
    )
    .await
    .context("sealing secrets")?;
    announce_admin(&*store, args.admin_token.as_deref()).await?;
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("cache"));
    let mut config = ExecutorConfig::new(args.isolation, cache_dir);
    args.executor.apply(&mut config);
    let invocation_memory = config.max_total_memory_bytes;
    let executor = Arc::new(
        Executor::start(config)
            .await
            .context("starting the executor")?,
    );
    let metrics = Arc::new(Metrics::new());
    let table = start_routing(store.clone(), Arc::clone(&metrics))
        .await
        .context("loading the routing table")?;
    let Parts {
        recorder,
        invoker,
        metrics: metrics_source,
    } = Parts::assemble(
        &store,
        Runner::local(executor),
        Arc::clone(&metrics),
        &args.records,
        args.kv.limits(),
        &args.data_dir,
    )?;
    let invoker: Arc<dyn Invoker> = invoker;
    let scheduler = Scheduler::start(
        store.clone(),
        Arc::clone(&invoker),
        Arc::clone(&recorder),
        metrics as Arc<dyn ScheduleObserver>,
        args.schedules.config(),
    )
    .await
    .context("loading the schedules")?;
    let in_flight = Arc::new(InFlight::default());
    let tokens = start_tokens(store.clone())
        .await
        .context("loading the tokens")?;
    let endpoints = EndpointState {
        table: Arc::clone(&table),
        tokens: Arc::clone(&tokens),
        invoker: Arc::clone(&invoker),
        ingress: Arc::new(Ingress::new(
            args.ingress.config(invocation_memory),
            Arc::clone(&in_flight),
        )),
        recorder: Arc::clone(&recorder),
        max_body_bytes: args.sizes.max_body_bytes,
    };
    let state = ApiState {
        routes: Some(Arc::new(LocalRoutes {
            table,
            store: store.clone(),
        })),
        metrics: Some(Arc::clone(&metrics_source) as Arc<dyn MetricsSource>),
        recorder: Some(Arc::clone(&recorder)),
        tokens,
        functions_domain: Some(args.hosts.functions_domain.domain().to_string()),
        store,
        invoker,
        in_flight,
        config: args.sizes.config(),
    };
    let dashboard = picloud_control::dashboard::locate(args.dashboard_dir.as_deref());
    match &dashboard {
        Some(dir) => tracing::info!(dir = %dir.display(), "serving the dashboard"),
        None => tracing::warn!(
            "the dashboard is not built (or --dashboard-dir holds no 200.html): / says how to build it"
        ),
    }
    Ok(Server {
        app: app(
            state,
            endpoints,
            metrics_source,
            dashboard.as_deref(),
            args.hosts.functions_domain.clone(),
        ),
        scheduler,
        recorder,
    })
}

/// The whole HTTP surface: on a tenant's own host (`{tenant}.{functions domain}`) its
/// functions and nothing else; on every other host the API, the function endpoints' path form,
/// health checks, and the dashboard for every other path; JSON 404 for unknown paths under
/// `/api/` and `/fn/`.
fn app(
    state: ApiState,
    endpoints: EndpointState,
    metrics: Arc<NodeMetrics>,
    dashboard: Option<&std::path::Path>,
    hosts: FunctionHosts,
) -> Router {
    let disk = Some(metrics.disk.clone());
    let ops = ops_router(state.store.clone(), metrics, None, disk)
        .merge(tls_ask_router(state.store.clone(), hosts.clone()));
    let functions = picloud_node::router(endpoints);
    let main = picloud_control::api::router(state)
        .merge(functions.clone())
        .merge(ops)
        .fallback_service(picloud_control::dashboard::router(dashboard));
    route_by_host(hosts, functions, main)
}
