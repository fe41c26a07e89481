//! The command line. Every flag has an environment variable.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use picloud_executor_core::{Executor, ExecutorConfig, Isolation};
use picloud_shared::{InvocationRequest, InvocationResult, Limits};

use crate::client::{
    ClientArgs, EnvCommand, FnCommand, ScheduleCommand, TenantCommand, TokenCommand,
};

#[derive(Debug, Parser)]
#[command(
    name = "picloud",
    version,
    about = "Self-hosted serverless functions in Rhai"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// A client command with the options every client command takes.
#[derive(Debug, Args)]
pub struct ClientCommand<C: Subcommand> {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: C,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: management API, function endpoints, health checks (the default).
    Serve(Box<crate::serve::ServeArgs>),
    /// Manage functions on a server: deploy, list, versions, rollback, invoke, delete.
    #[command(name = "fn")]
    Fn(ClientCommand<FnCommand>),
    /// Manage a function's environment variables and secrets.
    Env(ClientCommand<EnvCommand>),
    /// Manage a function's schedules (cron triggers of its `on_schedule(event)`).
    Schedule(ClientCommand<ScheduleCommand>),
    /// Manage API tokens.
    Token(ClientCommand<TokenCommand>),
    /// Manage tenants (admin).
    Tenant(ClientCommand<TenantCommand>),
    /// Show which token the client commands use, and its tenant.
    Whoami(ClientArgs),
    /// Work on the database directly, without the API: make an admin token when all are lost.
    Admin(crate::admin::AdminArgs),
    /// Format Rhai scripts in place (`--check` only lists the unformatted ones; `-` formats
    /// standard input to standard output).
    Fmt(crate::fmt::FmtArgs),
    /// Run one script through the executor and print the response, the outcome and its costs.
    Invoke(InvokeArgs),
    /// Benchmark baseline: run one invocation in this very process, without pool or sandbox,
    /// and print the result as JSON.
    #[command(name = "__invoke-once", hide = true)]
    InvokeOnce(InvokeArgs),
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The Rhai script (it must define `fn handle(req)`).
    pub file: PathBuf,
    /// The request as JSON: {"method", "path", "query", "headers", "body"}; missing fields
    /// default to a `GET /` with nothing else.
    #[arg(long, env = "PICLOUD_REQUEST")]
    pub request: Option<String>,
    /// `process` (a sandboxed process per invocation) or `instance` (in-process).
    #[arg(long, env = "PICLOUD_ISOLATION", default_value = "process")]
    pub isolation: Isolation,
    /// Wasm fuel for the invocation.
    #[arg(long, env = "PICLOUD_FUEL", default_value_t = Limits::default().fuel)]
    pub fuel: u64,
    /// Memory limit in MiB.
    #[arg(long, env = "PICLOUD_MEMORY_MB", default_value_t = Limits::default().memory_bytes >> 20)]
    pub memory_mb: u64,
    /// Wall-clock deadline in milliseconds.
    #[arg(long, env = "PICLOUD_TIMEOUT_MS", default_value_t = Limits::default().timeout_ms)]
    pub timeout_ms: u64,
    /// Where the compiled guest is cached. Default: `$XDG_CACHE_HOME/picloud`, else
    /// `~/.cache/picloud`, else `./picloud-data/cache`.
    #[arg(long, env = "PICLOUD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print the whole result as JSON instead.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command line; the exit code is 0 when the invocation's outcome is `ok`.
pub fn main() -> ExitCode {
    // `picloud` alone (what `cargo run -p picloud` runs) is `picloud serve`.
    let cli = if std::env::args_os().len() <= 1 {
        Cli::parse_from(["picloud", "serve"])
    } else {
        Cli::parse()
    };
    picloud_orchestrator_core::node::init_process();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = wants_json(&cli.command);
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let code = crate::client::exit_code(&e);
            if json {
                // `--json` prints one JSON document, a failure's too (on standard output, where
                // the success's would be; the exit code still tells them apart).
                println!("{}", crate::client::error_json(&e, code));
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(code)
        }
    }
}

/// Whether the command was asked for `--json` (`PICLOUD_JSON`).
fn wants_json(command: &Command) -> bool {
    match command {
        Command::Fn(c) => c.client.json,
        Command::Env(c) => c.client.json,
        Command::Schedule(c) => c.client.json,
        Command::Token(c) => c.client.json,
        Command::Tenant(c) => c.client.json,
        Command::Whoami(c) => c.json,
        Command::Invoke(args) => args.json,
        _ => false,
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => crate::serve::serve(*args).await.map(|()| ExitCode::SUCCESS),
        Command::Invoke(args) => invoke(args).await,
        Command::Admin(args) => crate::admin::run(args).await,
        Command::Whoami(c) => blocking(move || crate::client::run_whoami(&c)).await,
        Command::Fmt(args) => blocking(move || crate::fmt::run(&args)).await,
        // The client is blocking (one call at a time); keep it off the async threads.
        Command::Fn(c) => blocking(move || crate::client::run_fn(&c.client, &c.command)).await,
        Command::Env(c) => blocking(move || crate::client::run_env(&c.client, &c.command)).await,
        Command::Schedule(c) => {
            blocking(move || crate::client::run_schedule(&c.client, &c.command)).await
        }
        Command::Token(c) => {
            blocking(move || crate::client::run_token(&c.client, &c.command)).await
        }
        Command::Tenant(c) => {
            blocking(move || crate::client::run_tenant(&c.client, &c.command)).await
        }
        Command::InvokeOnce(args) => {
            let (script, request, limits, config) = prepare(&args)?;
            let result = picloud_executor_core::invoke_once(&config, &script, &request, &limits)?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn blocking(f: impl FnOnce() -> Result<ExitCode> + Send + 'static) -> Result<ExitCode> {
    tokio::task::spawn_blocking(f)
        .await
        .context("the command panicked")?
}

/// The default module cache directory.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("picloud"))
        .unwrap_or_else(|| PathBuf::from("picloud-data/cache"))
}

type Prepared = (String, InvocationRequest, Limits, ExecutorConfig);

fn prepare(args: &InvokeArgs) -> Result<Prepared> {
    let script = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let request = match &args.request {
        Some(json) => parse_request(json)?,
        None => InvocationRequest::get("/"),
    };
    let limits = Limits {
        fuel: args.fuel,
        memory_bytes: args.memory_mb << 20,
        timeout_ms: args.timeout_ms,
        ..Limits::default()
    };
    let cache_dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let mut config = ExecutorConfig::new(args.isolation, cache_dir);
    config.process.min_warm = 1;
    Ok((script, request, limits, config))
}

async fn invoke(args: InvokeArgs) -> Result<ExitCode> {
    let (script, request, limits, config) = prepare(&args)?;
    let executor = Executor::start(config)
        .await
        .context("starting the executor")?;
    let result = executor.invoke(&script, &request, &limits).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", render(&result));
    }
    Ok(if result.outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Parses `--request`, filling in `GET /` for what is missing.
pub fn parse_request(json: &str) -> Result<InvocationRequest> {
    let mut value: serde_json::Value =
        serde_json::from_str(json).context("--request is not valid JSON")?;
    let obj = value
        .as_object_mut()
        .context("--request must be a JSON object")?;
    obj.entry("method").or_insert_with(|| "GET".into());
    obj.entry("path").or_insert_with(|| "/".into());
    serde_json::from_value(value).context("--request does not describe a request")
}

/// The human form of a result.
pub fn render(result: &InvocationResult) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(r) = &result.response {
        let _ = writeln!(out, "HTTP {}", r.status);
        for (k, v) in &r.headers {
            let _ = writeln!(out, "{k}: {v}");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", r.body);
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "outcome: {}", result.outcome.describe());
    let _ = writeln!(
        out,
        "duration: {:.3} ms   fuel: {}   peak memory: {:.1} MiB",
        result.duration_us as f64 / 1000.0,
        result.fuel_used,
        result.peak_memory_bytes as f64 / (1 << 20) as f64
    );
    if !result.logs.is_empty() {
        let _ = writeln!(out, "logs:");
        for line in &result.logs {
            let _ = writeln!(out, "  [{}] {}", line.level.as_str(), line.message);
        }
        if result.logs_truncated {
            let _ = writeln!(out, "  … (truncated at the log limit)");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every command says what it is in `--help` (before: positional names
    /// and several flags had no text).
    #[test]
    fn every_argument_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.is_hide_set() {
                    continue;
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "picloud", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }
}
