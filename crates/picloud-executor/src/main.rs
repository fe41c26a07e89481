//! `picloud-executor`: one per cluster node. Runs the sandboxed process pool and takes
//! invocations from the node's orchestrator on a Unix socket (see
//! `picloud_executor_core::service`). It holds no database connection and no credential.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use picloud_executor_core::args::ExecutorArgs;
use picloud_executor_core::{Executor, ExecutorConfig, Isolation, service};

#[derive(Debug, Parser)]
#[command(
    name = "picloud-executor",
    version,
    about = "PiCloud's executor service (cluster mode)"
)]
struct Args {
    /// The Unix socket the node's orchestrator connects to (created mode 0660).
    #[arg(
        long,
        env = "PICLOUD_EXECUTOR_SOCKET",
        default_value = "/run/picloud/executor.sock"
    )]
    executor_socket: PathBuf,
    /// Where the compiled guest is cached.
    #[arg(long, env = "PICLOUD_CACHE_DIR", default_value = "/var/cache/picloud")]
    cache_dir: PathBuf,
    /// `process` (a sandboxed process per invocation) or `instance` (in-process).
    #[arg(long, env = "PICLOUD_ISOLATION", default_value = "process")]
    isolation: Isolation,
    /// How long invocations in progress may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "PICLOUD_GRACE_SECONDS", default_value_t = 10)]
    grace_seconds: u64,
    #[command(flatten)]
    caps: ExecutorArgs,
}

fn main() -> ExitCode {
    // Must run before anything starts a thread: this process may be the executor's zygote.
    picloud_executor_core::run_zygote_if_requested();
    let args = Args::parse();
    picloud_daemon::run_main(run(args))
}

async fn run(args: Args) -> Result<()> {
    let executor = Arc::new(
        Executor::start({
            let mut config = ExecutorConfig::new(args.isolation, args.cache_dir);
            args.caps.apply(&mut config);
            config
        })
        .await
        .context("starting the executor")?,
    );
    let listener = service::bind(&args.executor_socket)
        .with_context(|| format!("cannot listen on {}", args.executor_socket.display()))?;
    let stop = picloud_daemon::shutdown_signal();
    println!(
        "PiCloud executor listening on unix:{}",
        args.executor_socket.display()
    );
    let grace = Duration::from_secs(args.grace_seconds);
    if !service::serve(listener, executor, stop, grace).await {
        tracing::warn!("the grace period ended with invocations still running");
    }
    let _ = std::fs::remove_file(&args.executor_socket);
    Ok(())
}
