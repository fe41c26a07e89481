//! `picloud-orchestrator`: one per cluster node. Serves the function endpoints (`/fn/…`) from
//! a routing table loaded from PostgreSQL and kept current by its `LISTEN/NOTIFY`
//! announcements, runs each invocation on the node's `picloud-executor`, writes invocation
//! records, and runs due schedules (each tick exactly once across the cluster, on a node whose
//! executor answers).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use picloud_edge::{InFlight, MetricsSource, start_tokens};
use picloud_executor_protocol::{ExecutorClient, Invoker};
use picloud_node::args::{HostArgs, IngressArgs, KvArgs, RecordArgs, ScheduleArgs};
use picloud_node::listen::ListenArgs;
use picloud_node::scheduler::{ScheduleObserver, Scheduler};
use picloud_node::server::{Parts, Runner, ops_router, serve_until_signal};
use picloud_node::{EndpointState, Ingress, Metrics, route_by_host, start_routing};
use picloud_store::{AnyStore, PgStore};

#[derive(Debug, Parser)]
#[command(
    name = "picloud-orchestrator",
    version,
    about = "PiCloud's per-node function endpoints (cluster mode)"
)]
struct Args {
    /// Address to listen on (Caddy balances `/fn/*` across the nodes' addresses).
    #[arg(long, env = "PICLOUD_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// PostgreSQL URL (cluster mode has no embedded database).
    #[arg(long, env = "PICLOUD_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The node's executor socket.
    #[arg(
        long,
        env = "PICLOUD_EXECUTOR_SOCKET",
        default_value = "/run/picloud/executor.sock"
    )]
    executor_socket: PathBuf,
    /// Where the node keeps its record spool (records not yet written survive a crash here).
    #[arg(long, env = "PICLOUD_DATA_DIR", default_value = "./picloud-node")]
    data_dir: PathBuf,
    /// The manager's key that seals functions' secret variables (a copy on every node; see
    /// docs/operations.md). Default: `secret.key` in the data directory.
    #[arg(long, env = "PICLOUD_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    /// How long in-flight requests may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "PICLOUD_GRACE_SECONDS", default_value_t = 10)]
    grace_seconds: u64,
    /// Largest request body the function endpoints accept, in bytes (larger: 413).
    #[arg(long, env = "PICLOUD_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    #[command(flatten)]
    listen_limits: ListenArgs,
    #[command(flatten)]
    hosts: HostArgs,
    #[command(flatten)]
    ingress: IngressArgs,
    #[command(flatten)]
    records: RecordArgs,
    #[command(flatten)]
    kv: KvArgs,
    #[command(flatten)]
    schedules: ScheduleArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    picloud_daemon::run_main(run(args))
}

async fn run(args: Args) -> Result<()> {
    let store = AnyStore::Postgres(
        PgStore::connect(&args.database_url)
            .await
            .context("opening PostgreSQL")?,
    );
    // A node never makes a key of its own: one that differs from the manager's opens nothing.
    let store = picloud_node::server::with_secret_key(
        store,
        args.secret_key_file.as_deref(),
        &args.data_dir,
        false,
    )
    .await
    .context("opening sealed secrets")?;
    let runner = Runner::remote(ExecutorClient::new(&args.executor_socket));
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
        Arc::clone(&runner),
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
    let tokens = start_tokens(store.clone())
        .await
        .context("loading the tokens")?;
    let endpoints = EndpointState {
        table,
        tokens,
        invoker,
        ingress: Arc::new(Ingress::new(
            // The node's executor runs on this machine, with its default budget.
            args.ingress
                .config(picloud_executor_protocol::default_total_memory()),
            Arc::new(InFlight::default()),
        )),
        recorder: Arc::clone(&recorder),
        max_body_bytes: args.max_body_bytes,
    };
    // A node serves functions only: on a tenant's own host, and in the path form elsewhere.
    let functions = picloud_node::router(endpoints);
    let main = functions.clone().merge(ops_router(
        store,
        Arc::clone(&metrics_source) as Arc<dyn MetricsSource>,
        Some(runner),
        Some(metrics_source.disk.clone()),
    ));
    let app = route_by_host(args.hosts.functions_domain.clone(), functions, main);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let stop = picloud_daemon::shutdown_signal();
    println!(
        "PiCloud orchestrator listening on http://{}",
        listener.local_addr()?
    );
    let grace = Duration::from_secs(args.grace_seconds);
    serve_until_signal(
        listener,
        app,
        grace,
        &args.listen_limits.config(args.max_body_bytes),
        stop,
    )
    .await
    .context("serving")?;
    if !scheduler.stop(grace).await {
        tracing::warn!("schedule runs still in progress at exit");
    }
    if !recorder.flush(Duration::from_secs(5)).await {
        tracing::warn!("invocation records still unwritten at exit (they stay in the spool)");
    }
    Ok(())
}
