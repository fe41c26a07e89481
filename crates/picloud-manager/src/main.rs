//! `picloud-manager`: the cluster's control plane. Serves the management API (`/api/v1`) and
//! the dashboard over PostgreSQL; every change it commits is announced to the nodes with
//! `NOTIFY`. It serves no function endpoint: its test invocations run on an executor of its
//! own (`--executor-socket`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use picloud_control::api::{ApiState, InFlight, MetricsSource};
use picloud_control::args::SizeArgs;
use picloud_control::auth::announce_admin;
use picloud_edge::start_tokens;
use picloud_executor_protocol::ExecutorClient;
use picloud_node::Metrics;
use picloud_node::args::{HostArgs, KvArgs, RecordArgs};
use picloud_node::hosts::tls_ask_router;
use picloud_node::listen::ListenArgs;
use picloud_node::server::{Parts, Runner, ops_router, serve_until_signal};
use picloud_store::{AnyStore, PgStore};

#[derive(Debug, Parser)]
#[command(
    name = "picloud-manager",
    version,
    about = "PiCloud's control plane: API and dashboard (cluster mode)"
)]
struct Args {
    /// Address to listen on (Caddy sends `/api/*` and the dashboard here).
    #[arg(long, env = "PICLOUD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// PostgreSQL URL (cluster mode has no embedded database).
    #[arg(long, env = "PICLOUD_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Token chosen for the admin at first start (for automation); otherwise one is generated
    /// and printed once.
    #[arg(long, env = "PICLOUD_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The executor that runs test invocations (`POST …/test`).
    #[arg(
        long,
        env = "PICLOUD_EXECUTOR_SOCKET",
        default_value = "/run/picloud/executor.sock"
    )]
    executor_socket: PathBuf,
    /// Where the manager keeps its record spool (test invocations' records).
    #[arg(long, env = "PICLOUD_DATA_DIR", default_value = "./picloud-manager")]
    data_dir: PathBuf,
    /// The key that seals functions' secret variables in the database (made at first start,
    /// mode 0600; back it up, and give each node a copy). Default: `secret.key` in the data
    /// directory.
    #[arg(long, env = "PICLOUD_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    /// The built dashboard (`200.html` and `_app/`). Default: `dashboard/build` in the working
    /// directory or in the repository the binary was built from.
    #[arg(long, env = "PICLOUD_DASHBOARD_DIR")]
    dashboard_dir: Option<PathBuf>,
    /// How long in-flight requests may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "PICLOUD_GRACE_SECONDS", default_value_t = 10)]
    grace_seconds: u64,
    #[command(flatten)]
    listen_limits: ListenArgs,
    #[command(flatten)]
    hosts: HostArgs,
    #[command(flatten)]
    sizes: SizeArgs,
    #[command(flatten)]
    records: RecordArgs,
    #[command(flatten)]
    kv: KvArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    picloud_daemon::run_main(run(args))
}

async fn run(args: Args) -> Result<()> {
    // The address first: a start that cannot listen must not make (and print) the one-time
    // admin token.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let store = AnyStore::Postgres(
        PgStore::connect(&args.database_url)
            .await
            .context("opening PostgreSQL")?,
    );
    picloud_daemon::private_dir(&args.data_dir)
        .with_context(|| format!("the data directory {}", args.data_dir.display()))?;
    let store = picloud_node::server::with_secret_key(
        store,
        args.secret_key_file.as_deref(),
        &args.data_dir,
        true,
    )
    .await
    .context("sealing secrets")?;
    announce_admin(&*store, args.admin_token.as_deref()).await?;
    // No endpoint runs here: its metrics are its test executor's pool and its record queue.
    let Parts {
        recorder,
        invoker,
        metrics: metrics_source,
    } = Parts::assemble(
        &store,
        Runner::remote(ExecutorClient::new(&args.executor_socket)),
        Arc::new(Metrics::new()),
        &args.records,
        args.kv.limits(),
        &args.data_dir,
    )?;
    let tokens = start_tokens(store.clone())
        .await
        .context("loading the tokens")?;
    let state = ApiState {
        tokens,
        functions_domain: Some(args.hosts.functions_domain.domain().to_string()),
        // The nodes hear of each change through PostgreSQL.
        routes: None,
        metrics: Some(Arc::clone(&metrics_source) as Arc<dyn MetricsSource>),
        recorder: Some(Arc::clone(&recorder)),
        store: store.clone(),
        invoker,
        in_flight: Arc::new(InFlight::default()),
        config: args.sizes.config(),
    };
    let dashboard = picloud_control::dashboard::locate(args.dashboard_dir.as_deref());
    if dashboard.is_none() {
        tracing::warn!("the dashboard is not built: / says how to build it");
    }
    // The manager's readiness is the database's: an executor away only fails test invocations.
    let app = picloud_control::api::router(state)
        .merge(ops_router(
            store.clone(),
            Arc::clone(&metrics_source) as Arc<dyn MetricsSource>,
            None,
            Some(metrics_source.disk.clone()),
        ))
        // Caddy's on-demand TLS asks the manager before a certificate for a tenant's host.
        .merge(tls_ask_router(store, args.hosts.functions_domain.clone()))
        .fallback_service(picloud_control::dashboard::router(dashboard.as_deref()));
    let stop = picloud_daemon::shutdown_signal();
    println!(
        "PiCloud manager listening on http://{}",
        listener.local_addr()?
    );
    serve_until_signal(
        listener,
        app,
        Duration::from_secs(args.grace_seconds),
        &args
            .listen_limits
            .config(args.sizes.max_body_bytes.max(args.sizes.max_script_bytes)),
        stop,
    )
    .await
    .context("serving")?;
    if !recorder.flush(Duration::from_secs(5)).await {
        tracing::warn!("invocation records still unwritten at exit (they stay in the spool)");
    }
    Ok(())
}
