//! The command line. Every setting a server or client keeps between commands has an environment
//! variable; what one command acts on (names, files, one-off values) is given on the line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use picloud_executor_core::{Executor, ExecutorConfig, HostCalls, InvocationContext, Isolation};
use picloud_shared::{FunctionRef, InvocationRequest, InvocationResult, Limits};
use picloud_store::kv::{KvLimits, MemoryKv};

use crate::client::{
    ClientArgs, EnvCommand, FnCommand, KvCommand, ScheduleCommand, TenantCommand, TokenCommand,
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
    /// Manage tenants: create, list, show, ceilings, delete (admin).
    Tenant(ClientCommand<TenantCommand>),
    /// Look at the tenant's key-value store (what its scripts `kv_set`): list, get, rm.
    Kv(ClientCommand<KvCommand>),
    /// Show which token the client commands use, and its tenant.
    Whoami(ClientArgs),
    /// Work on the database directly, without the API: make an admin token when all are lost.
    Admin(crate::admin::AdminArgs),
    /// Format Rhai scripts in place (`--check` only lists the unformatted ones; `-` formats
    /// standard input to standard output).
    Fmt(crate::fmt::FmtArgs),
    /// Run one script on this machine, without a server, and print the response, the outcome
    /// and its costs. It has the server's sandbox and limits, `env(NAME)` from `--env`, and a
    /// key-value store in memory (`--kv-file` keeps it). It lacks what a server adds: no
    /// records or metrics, no schedules (`on_schedule` is not called), no tenant ceilings, no
    /// key-value rate, and no tokens.
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
    /// A variable the script reads with `env("NAME")`, as NAME=VALUE (again for more).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// A JSON file holding the key-value store (an object of key → value): read before the
    /// run (missing: empty) and written back after it. Without it the store lives in memory
    /// for this run only.
    #[arg(long, value_name = "FILE")]
    pub kv_file: Option<PathBuf>,
    /// Print the whole result as JSON instead.
    #[arg(long)]
    pub json: bool,
}

/// `NAME=VALUE`, the name as the server takes it: letters, digits and '_', not starting with
/// a digit.
fn parse_env(text: &str) -> Result<(String, String), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("{text:?} is not NAME=VALUE"));
    };
    let fine = name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !fine {
        return Err(format!(
            "{name:?} is not a variable name: letters, digits and '_', not starting with a digit"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// The key-value store of `picloud invoke`, from `--kv-file` when given.
fn local_kv(file: Option<&std::path::Path>) -> Result<MemoryKv> {
    let mut entries = std::collections::BTreeMap::new();
    if let Some(file) = file {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
                    .with_context(|| {
                    format!(
                        "{} is not a JSON object of key → value (what --kv-file writes)",
                        file.display()
                    )
                })?;
                for (key, value) in map {
                    entries.insert(key, serde_json::to_string(&value)?);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
    }
    Ok(MemoryKv::new(entries, KvLimits::default()))
}

/// Writes the store back to `--kv-file`, whole, through a temporary file (a crash leaves the
/// old one).
fn keep_kv(kv: &MemoryKv, file: &std::path::Path) -> Result<()> {
    let mut map = serde_json::Map::new();
    for (key, text) in kv.entries() {
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        map.insert(key, value);
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(map))?;
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text + "\n")
        .with_context(|| format!("cannot write {}", file.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

/// Runs the command line; the exit code is 0 when the invocation's outcome is `ok`.
pub fn main() -> ExitCode {
    // `picloud` alone (what `cargo run -p picloud` runs) is `picloud serve`.
    let cli = if std::env::args_os().len() <= 1 {
        Cli::parse_from(["picloud", "serve"])
    } else {
        Cli::parse()
    };
    picloud_daemon::init_process();
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
        Command::Kv(c) => c.client.json,
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
        Command::Kv(c) => blocking(move || crate::client::run_kv(&c.client, &c.command)).await,
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
    let kv = Arc::new(local_kv(args.kv_file.as_deref())?);
    let env: BTreeMap<String, String> = args.env.iter().cloned().collect();
    let executor = Executor::start(config)
        .await
        .context("starting the executor")?;
    let name = args
        .file
        .file_stem()
        .map_or_else(|| "script".into(), |s| s.to_string_lossy().into_owned());
    let result = executor
        .invoke_with(
            &FunctionRef::new("local", name),
            &script,
            &request,
            &limits,
            InvocationContext {
                env: Some(&env),
                host: Some(Arc::clone(&kv) as Arc<dyn HostCalls>),
                event: None,
            },
        )
        .await;
    if let Some(file) = &args.kv_file {
        keep_kv(&kv, file)?;
    }
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
