//! The CLI's side of the management API: `picloud fn …`, `env …`, `schedule …`, `token …`,
//! `tenant …`.
//! Each command is one or two API calls; `--json` prints what the API answered.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the server is and who we are.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's address.
    #[arg(
        long,
        global = true,
        env = "PICLOUD_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// An API token (`pc_…`).
    #[arg(long, global = true, env = "PICLOUD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The tenant to act on. Default: the token's own tenant (an admin token must name one).
    #[arg(long, global = true, env = "PICLOUD_TENANT")]
    pub tenant: Option<String>,
    /// Print the API's JSON answer instead of text.
    #[arg(long, global = true, env = "PICLOUD_JSON")]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum FnCommand {
    /// Save FILE as a new version of NAME (creating the function if needed) and deploy it.
    Deploy {
        /// The function's name: lower-case letters, digits and '-'.
        name: String,
        /// The Rhai script (it must define `fn handle(req)`).
        file: PathBuf,
        /// Make the function token-protected (a new one, or an existing public one).
        #[arg(long, conflicts_with = "public")]
        private: bool,
        /// Make an existing token-protected function public again.
        #[arg(long)]
        public: bool,
    },
    /// List the functions.
    List,
    /// List a function's versions.
    Versions {
        /// The function's name.
        name: String,
    },
    /// Print a version's source (default: the active version's), as saved.
    Source {
        /// The function's name.
        name: String,
        /// Which version (1, 2, …).
        #[arg(long)]
        version: Option<i32>,
    },
    /// Make an earlier version active again (default: the one before the active version).
    Rollback {
        /// The function's name.
        name: String,
        /// The version to make active (default: the one before the active version).
        version: Option<i32>,
    },
    /// Run a function once through the API and show the result (exit 1 unless it succeeded).
    Invoke {
        /// The function's name.
        name: String,
        /// The request as JSON: {"method", "path", "query", "headers", "body"}.
        #[arg(long)]
        request: Option<String>,
        /// Run this saved version instead of the active one.
        #[arg(long)]
        version: Option<i32>,
        /// Run this script instead (not saved).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Delete a function with its versions and variables (asks first).
    Delete {
        /// The function's name.
        name: String,
        /// Do not ask (for scripts; without a terminal the command needs it).
        #[arg(long, short)]
        yes: bool,
    },
    /// Show the limits a function runs under, or choose some (`default` gives one back to the
    /// server's default).
    Limits {
        /// The function's name.
        name: String,
        #[command(flatten)]
        limits: LimitFlags,
    },
    /// Pin a version: no pruning (automatic at the version cap, or `fn prune`) removes it.
    Pin {
        /// The function's name.
        name: String,
        /// The version to keep (`fn versions`).
        version: i32,
    },
    /// Unpin a version: pruning may remove it again.
    Unpin {
        /// The function's name.
        name: String,
        /// The version (`fn versions`).
        version: i32,
    },
    /// Delete a function's old versions: all but the live one, the pinned ones and the newest
    /// `--keep`.
    Prune {
        /// The function's name.
        name: String,
        /// How many of the newest versions to keep besides the live and pinned ones.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
        keep: u32,
    },
    /// Show a function's invocation records, oldest first; `--follow` then streams new ones.
    /// With `--json`: one JSON array, or under `--follow` one JSON object per line (NDJSON).
    Logs {
        /// The function's name.
        name: String,
        /// Keep streaming invocations as they happen (Ctrl-C to stop).
        #[arg(long, short)]
        follow: bool,
        /// Only this outcome.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(picloud_shared::Outcome::KINDS))]
        outcome: Option<String>,
        /// How many of the latest records, from 1 to 1,000.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}

/// A limit as given on the command line: a number, or `default` to clear a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitValue {
    Set(i64),
    Default,
}

impl std::str::FromStr for LimitValue {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("default") {
            return Ok(Self::Default);
        }
        text.replace('_', "")
            .parse::<i64>()
            .ok()
            .filter(|v| *v > 0)
            .map(Self::Set)
            .ok_or_else(|| format!("{text:?} is neither a whole number from 1 nor `default`"))
    }
}

/// The limits a command may choose; each left out stays as it is.
#[derive(Debug, Args)]
pub struct LimitFlags {
    /// Wall-clock deadline of one invocation, in milliseconds (or `default`).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<LimitValue>,
    /// Wasm fuel of one invocation, about one unit per instruction (or `default`).
    #[arg(long, value_name = "UNITS")]
    pub fuel: Option<LimitValue>,
    /// Memory of one invocation, in MiB (or `default`).
    #[arg(long, value_name = "MIB")]
    pub memory_mb: Option<LimitValue>,
    /// Invocations running at once; more are refused with 429 (or `default`).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<LimitValue>,
}

impl LimitFlags {
    fn any(&self) -> bool {
        self.timeout_ms.is_some()
            || self.fuel.is_some()
            || self.memory_mb.is_some()
            || self.concurrency.is_some()
    }

    /// `chosen` (the API's `chosen_limits` or `chosen_ceilings`) with these flags applied.
    fn apply(&self, chosen: &Value) -> Value {
        let mut out = json!({
            "timeout_ms": chosen["timeout_ms"],
            "fuel": chosen["fuel"],
            "memory_bytes": chosen["memory_bytes"],
            "concurrency": chosen["concurrency"],
        });
        let mut set = |field: &str, value: Option<LimitValue>, scale: i64| match value {
            Some(LimitValue::Set(v)) => out[field] = json!(v.saturating_mul(scale)),
            Some(LimitValue::Default) => out[field] = Value::Null,
            None => {}
        };
        set("timeout_ms", self.timeout_ms, 1);
        set("fuel", self.fuel, 1);
        set("memory_bytes", self.memory_mb, 1 << 20);
        set("concurrency", self.concurrency, 1);
        out
    }
}

/// Limits in force as a small table, each marked `chosen` or `unchosen` (what it falls back
/// to: a function's default, the platform's ceiling).
fn limits_table(in_force: &Value, chosen: &Value, unchosen: &str) -> String {
    let mark = |field: &str| {
        if chosen[field].is_null() {
            unchosen
        } else {
            "chosen"
        }
    };
    let memory = in_force["memory_bytes"]
        .as_u64()
        .map_or_else(|| "-".to_string(), |b| format!("{} MiB", b >> 20));
    format!(
        "timeout      {:>14} ms   {}\nfuel         {:>17}   {}\nmemory       {:>17}   {}\nconcurrency  {:>17}   {}\n",
        s(&in_force["timeout_ms"]),
        mark("timeout_ms"),
        s(&in_force["fuel"]),
        mark("fuel"),
        memory,
        mark("memory_bytes"),
        s(&in_force["concurrency"]),
        mark("concurrency"),
    )
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Set a variable of a function.
    Set {
        /// The function's name.
        function: String,
        /// The variable's name: letters, digits and '_', not starting with a digit.
        name: String,
        /// Its value (the script reads it with `env("NAME")`).
        value: String,
        /// Write-only: the API never shows the value again.
        #[arg(long)]
        secret: bool,
    },
    /// Remove a variable of a function.
    Unset {
        /// The function's name.
        function: String,
        /// The variable's name.
        name: String,
    },
    /// List a function's variables (secrets without values).
    List {
        /// The function's name.
        function: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Run FUNCTION's `on_schedule(event)` on a cron schedule: 5 fields (minute hour day month
    /// weekday), 6 (seconds first), 7 (and a year), or `@daily` and the like.
    Add {
        /// The function's name (its active version must define `fn on_schedule(event)`).
        function: String,
        /// When: `'*/15 * * * *'`, `'0 9 * * 1-5'` (cron(5); quote it), `@daily`, ….
        cron: String,
        /// The IANA time zone the expression is read in.
        #[arg(long = "tz", default_value = "UTC")]
        time_zone: String,
        /// JSON handed to the script as `event.payload`.
        #[arg(long)]
        payload: Option<String>,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
    },
    /// List a function's schedules.
    List {
        /// The function's name.
        function: String,
    },
    /// Delete a schedule.
    Rm {
        /// The function's name.
        function: String,
        /// The schedule's id (`schedule list`).
        id: i64,
    },
    /// Pause a schedule: no ticks run until it is resumed.
    Pause {
        /// The function's name.
        function: String,
        /// The schedule's id (`schedule list`).
        id: i64,
    },
    /// Resume a schedule from its next tick (the paused ticks are not made up).
    Resume {
        /// The function's name.
        function: String,
        /// The schedule's id (`schedule list`).
        id: i64,
    },
    /// A schedule's runs, newest first: when each tick was due, when it finished, its outcome.
    Runs {
        /// The function's name.
        function: String,
        /// The schedule's id (`schedule list`).
        id: i64,
        /// How many of the latest runs, from 1 to 1,000.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// The token's name (unique among the live tokens of its tenant).
        name: String,
        /// An admin token (needs an admin token).
        #[arg(long)]
        admin: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// The admin tokens instead (needs an admin token).
        #[arg(long)]
        admin: bool,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token's id (`token list`).
        id: i64,
        /// An admin token (needs an admin token).
        #[arg(long)]
        admin: bool,
        /// Do not ask when it is the token in use.
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (needs an admin token).
    Create {
        /// The tenant's name: lower-case letters, digits and '-'.
        name: String,
    },
    /// List tenants (needs an admin token).
    List,
    /// Show a tenant: its ceilings and what it is allowed.
    Show {
        /// The tenant's name.
        name: String,
    },
    /// Set the ceilings on a tenant's function limits (needs an admin token); without flags,
    /// show them. `default` gives one back to the platform's ceiling.
    Ceilings {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        limits: LimitFlags,
        /// Whether its schedules may fire more than once a minute (six fields, several seconds).
        #[arg(long, value_name = "yes|no", value_parser = clap::builder::BoolishValueParser::new())]
        sub_minute_schedules: Option<bool>,
    },
    /// Delete a tenant with its tokens, functions, schedules, records and keys (needs an
    /// admin token; asks first).
    Delete {
        /// The tenant's name.
        name: String,
        /// Do not ask (for scripts; without a terminal the command needs it).
        #[arg(long, short)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// List the tenant's keys, in byte order.
    List {
        /// Only keys that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// How many keys at most (pages of 1,000 are fetched until then).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        limit: u32,
    },
    /// Print a key's value as JSON.
    Get {
        /// The key, exactly as the script wrote it.
        key: String,
    },
    /// Delete a key.
    Rm {
        /// The key, exactly as the script wrote it.
        key: String,
    },
}

/// A blocking API client: the CLI does one thing at a time.
struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Client {
    fn new(args: &ClientArgs) -> Result<Self> {
        let server = args.server.trim_end_matches('/');
        let Some(rest) = server
            .strip_prefix("http://")
            .or_else(|| server.strip_prefix("https://"))
        else {
            return Err(Usage(format!(
                "--server {server:?} is not a URL: give the scheme too, as in http://{server} \
                 (or https:// behind a TLS proxy)"
            ))
            .into());
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
            return Err(Usage(format!(
                "--server {server:?} must be the server's address alone, as in http://127.0.0.1:8080"
            ))
            .into());
        }
        let Some(token) = args.token.clone() else {
            return Err(Usage(
                "no token: set PICLOUD_TOKEN (the admin token is printed at the server's first start)"
                    .into(),
            )
            .into());
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(Self {
            agent,
            base: args.server.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// Sends a request; returns the JSON answer, or fails with the API's error message (a
    /// [`Refused`] when the server answered).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        check_path(path)?;
        let url = format!("{}/api/v1{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let mut sent = 0usize;
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            (m, b) => {
                let b = serde_json::to_vec(b.unwrap_or(&json!({})))?;
                sent = b.len();
                let req = match m {
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                };
                req.header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(&b[..])
            }
        };
        let mut response = response.map_err(|e| {
            let mut cause = e.to_string();
            // A server refuses a body past its cap from the declared length and reads at most
            // 32 MiB more of it; past that the connection breaks before its 413 is read.
            if matches!(e, ureq::Error::Io(_)) && sent > LARGE_BODY {
                cause.push_str(&format!(
                    " (the server stopped reading a body of {sent} bytes: most likely it is \
                     more than the server takes, its --max-script-bytes and --max-body-bytes)"
                ));
            }
            Unreachable {
                server: self.base.clone(),
                cause,
            }
        })?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .context("reading the server's answer")?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .with_context(|| format!("the server answered {status} with non-JSON: {text}"))?
        };
        if !status.is_success() {
            return Err(Refused {
                status: status.as_u16(),
                message: value["error"]["message"]
                    .as_str()
                    .unwrap_or(&text)
                    .to_string(),
                line: value["error"]["line"].as_u64(),
                column: value["error"]["column"].as_u64(),
            }
            .into());
        }
        Ok(value)
    }

    /// Reads a server-sent event stream, calling `each` with every `invocation` event's JSON,
    /// until the server closes it.
    fn follow(&self, path: &str, mut each: impl FnMut(&Value) -> Result<()>) -> Result<()> {
        use std::io::BufRead;
        let url = format!("{}/api/v1{path}", self.base);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Accept", "text/event-stream")
            .call()
            .map_err(|e| Unreachable {
                server: self.base.clone(),
                cause: e.to_string(),
            })?;
        if !response.status().is_success() {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            bail!("{} {text}", response.status().as_u16());
        }
        let reader = std::io::BufReader::new(response.body_mut().as_reader());
        let mut event = String::new();
        for line in reader.lines() {
            let line = line.context("reading the stream")?;
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                match event.as_str() {
                    "invocation" => each(&serde_json::from_str(data.trim())?)?,
                    "dropped" => {
                        let n = data.trim();
                        let noun = if n == "1" {
                            "invocation"
                        } else {
                            "invocations"
                        };
                        eprintln!("({n} {noun} skipped: the stream fell behind)");
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The tenant to act on: the flag, else the token's own.
    fn tenant(&self, args: &ClientArgs) -> Result<String> {
        if let Some(t) = &args.tenant {
            return Ok(t.clone());
        }
        let me = self.call("GET", "/whoami", None)?;
        match me["tenant"].as_str() {
            Some(t) => Ok(t.to_string()),
            None => {
                bail!("this is an admin token: say which tenant with --tenant or PICLOUD_TENANT")
            }
        }
    }
}

/// A body from which on a broken connection is likely the server refusing its size (the
/// server's default body cap is 1 MiB).
const LARGE_BODY: usize = 1 << 20;

/// The server refused a request: its status and its error's message (and where in the script,
/// for a script it refused).
#[derive(Debug)]
struct Refused {
    status: u16,
    message: String,
    line: Option<u64>,
    column: Option<u64>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, " (line {l}, column {c})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

/// A command the client refuses before sending anything (exit code 2, as a usage error).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The server could not be reached (exit code 3).
#[derive(Debug)]
struct Unreachable {
    server: String,
    cause: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot reach the server at {}: {}",
            self.server, self.cause
        )
    }
}

impl std::error::Error for Unreachable {}

/// The exit code of a failed command: 2 refused before sending (usage), 3 the server could not
/// be reached, 1 the server refused (or anything else).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<Usage>().is_some() {
        2
    } else if e.downcast_ref::<Unreachable>().is_some() {
        3
    } else {
        1
    }
}

/// A failure as the JSON document `--json` prints: `{"error": {"message", "exit_code",
/// "status"?, "line"?, "column"?}}` (`status` when the server answered).
pub fn error_json(e: &anyhow::Error, exit_code: u8) -> Value {
    let mut error = json!({ "message": format!("{e:#}"), "exit_code": exit_code });
    if let Some(r) = e.downcast_ref::<Refused>() {
        error["status"] = json!(r.status);
        error["message"] = json!(r.message);
        if let (Some(l), Some(c)) = (r.line, r.column) {
            error["line"] = json!(l);
            error["column"] = json!(c);
        }
    }
    json!({ "error": error })
}

/// Asks before `what` (which cannot be undone) unless `yes`; without a terminal to ask on, it
/// is refused (a script must say `--yes`).
fn confirm(yes: bool, what: &str) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Usage(format!(
            "{what} cannot be undone: pass --yes to do it without asking"
        ))
        .into());
    }
    eprint!("{what} cannot be undone. Go on? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Usage("not confirmed: nothing was changed".into()).into())
    }
}

/// A refusal of the script read from `file`, told as compilers tell it: `FILE:LINE:COL: …`.
fn in_file(e: anyhow::Error, file: &std::path::Path) -> anyhow::Error {
    match e.downcast_ref::<Refused>() {
        Some(Refused {
            message,
            line: Some(l),
            column: Some(c),
            ..
        }) => anyhow::anyhow!("{}:{l}:{c}: {message}", file.display()),
        Some(Refused { message, .. }) if message.contains("script") => {
            anyhow::anyhow!("{}: {message}", file.display())
        }
        _ => e,
    }
}

/// Refuses a path whose segments the API could not name (a space, a slash in a name…) before
/// it is sent, saying which name and what names may hold: the server's names are
/// `[a-z0-9][a-z0-9-]*` (variables `[A-Za-z_][A-Za-z0-9_]*`), so a valid one needs no encoding.
fn check_path(path: &str) -> Result<()> {
    let path = path.split('?').next().unwrap_or_default();
    for segment in path.split('/').skip(1) {
        let fine = !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !fine {
            return Err(Usage(format!(
                "{segment:?} is not a valid name: tenants, functions and tokens are lower-case \
                 letters, digits and '-' (at most 63, starting with a letter or digit); variables \
                 are letters, digits and '_'"
            ))
            .into());
        }
    }
    Ok(())
}

fn print(args: &ClientArgs, value: &Value, human: impl FnOnce(&Value) -> String) -> Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", human(value));
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub fn run_fn(args: &ClientArgs, command: &FnCommand) -> Result<ExitCode> {
    let client = Client::new(args)?;
    let tenant = client.tenant(args)?;
    let fns = format!("/tenants/{tenant}/functions");
    match command {
        FnCommand::Deploy {
            name,
            file,
            private,
            public,
        } => {
            let source = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let existing = client.call("GET", &format!("{fns}/{name}"), None);
            let mut access_changed = None;
            let mut reused = false;
            let function = match existing {
                Ok(current) => {
                    let saved = client
                        .call(
                            "POST",
                            &format!("{fns}/{name}/versions"),
                            Some(&json!({ "source": source, "deploy": true })),
                        )
                        .map_err(|e| in_file(e, file))?;
                    reused = saved["reused"].as_bool() == Some(true);
                    // `--private`/`--public` on an existing function change its access (only
                    // after the version was accepted: a refused deploy changes nothing).
                    let wanted = match (*private, *public) {
                        (true, _) => Some(false),
                        (_, true) => Some(true),
                        _ => None,
                    };
                    if let Some(want) = wanted
                        && current["public"].as_bool() != Some(want)
                    {
                        client.call(
                            "PATCH",
                            &format!("{fns}/{name}"),
                            Some(&json!({ "public": want })),
                        )?;
                        access_changed = Some(want);
                    }
                    client.call("GET", &format!("{fns}/{name}"), None)?
                }
                Err(e)
                    if e.downcast_ref::<Refused>()
                        .is_some_and(|r| r.status == 404 && r.message == "no such function") =>
                {
                    client
                        .call(
                            "POST",
                            &fns,
                            Some(&json!({ "name": name, "public": !private, "source": source, "deploy": true })),
                        )
                        .map_err(|e| in_file(e, file))?
                }
                Err(e) => return Err(e),
            };
            print(args, &function, |f| {
                let verb = if reused {
                    "unchanged (the same source):"
                } else {
                    "deployed"
                };
                let mut said = format!(
                    "{verb} {} version {} at {}{}\n",
                    s(&f["name"]),
                    s(&f["active_version"]),
                    client.base,
                    s(&f["endpoint"])
                );
                match access_changed {
                    Some(false) => said += "it is now token-protected (it was public)\n",
                    Some(true) => said += "it is now public (it was token-protected)\n",
                    None => {}
                }
                // The tenant's own host: where a browser should load it (its own origin).
                if let Some(own) = own_url(&client.base, f) {
                    said += &format!("in its tenant's own origin: {own}\n");
                }
                said
            })?;
        }
        FnCommand::List => {
            let list = client.call("GET", &fns, None)?;
            print(args, &list, |l| {
                let mut out = format!("{:<32} {:>7} {:<8} ENDPOINT\n", "NAME", "ACTIVE", "ACCESS");
                for f in l.as_array().into_iter().flatten() {
                    let access = if f["public"].as_bool() == Some(true) {
                        "public"
                    } else {
                        "token"
                    };
                    out += &format!(
                        "{:<32} {:>7} {:<8} {}\n",
                        s(&f["name"]),
                        s(&f["active_version"]),
                        access,
                        s(&f["endpoint"])
                    );
                }
                out
            })?;
        }
        FnCommand::Versions { name } => {
            let list = client.call("GET", &format!("{fns}/{name}/versions"), None)?;
            print(args, &list, |l| {
                let mut out = format!(
                    "{:>7}  {:<16} {:<24} SHA-256\n",
                    "VERSION", "AUTHOR", "SAVED (UTC)"
                );
                for v in l.as_array().into_iter().flatten() {
                    let mark = if v["active"].as_bool() == Some(true) {
                        "*"
                    } else {
                        " "
                    };
                    out += &format!(
                        "{:>6}{mark}  {:<16} {:<24} {}\n",
                        s(&v["version"]),
                        s(&v["author"]),
                        when(&v["created_at"]),
                        s(&v["sha256"])
                    );
                }
                out
            })?;
        }
        FnCommand::Source { name, version } => {
            let version = match version {
                Some(v) => *v,
                None => {
                    let f = client.call("GET", &format!("{fns}/{name}"), None)?;
                    let Some(v) = f["active_version"].as_i64() else {
                        bail!("{name} has no active version: name one with --version");
                    };
                    i32::try_from(v).context("a version number out of range")?
                }
            };
            let v = client.call("GET", &format!("{fns}/{name}/versions/{version}"), None)?;
            print(args, &v, |v| s(&v["source"]))?;
        }
        FnCommand::Rollback { name, version } => {
            let f = client.call(
                "POST",
                &format!("{fns}/{name}/rollback"),
                Some(&json!({ "version": version })),
            )?;
            print(args, &f, |f| {
                format!(
                    "{} now runs version {}\n",
                    s(&f["name"]),
                    s(&f["active_version"])
                )
            })?;
        }
        FnCommand::Invoke {
            name,
            request,
            version,
            file,
        } => {
            let request = match request {
                Some(r) => {
                    serde_json::from_str::<Value>(r).context("--request is not valid JSON")?
                }
                None => json!({}),
            };
            let source = match file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .with_context(|| format!("cannot read {}", f.display()))?,
                ),
                None => None,
            };
            let result = client.call(
                "POST",
                &format!("{fns}/{name}/invoke"),
                Some(&json!({ "request": request, "version": version, "source": source })),
            )?;
            let parsed: picloud_shared::InvocationResult =
                serde_json::from_value(result.clone())
                    .context("the server's result is not an invocation result")?;
            print(args, &result, |_| crate::cli::render(&parsed))?;
            return Ok(if parsed.outcome.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        FnCommand::Limits { name, limits } => {
            let path = format!("{fns}/{name}");
            let mut f = client.call("GET", &path, None)?;
            if limits.any() {
                f = client.call(
                    "PATCH",
                    &path,
                    Some(&json!({ "limits": limits.apply(&f["chosen_limits"]) })),
                )?;
            }
            print(args, &f, |f| {
                format!(
                    "{} runs under:\n{}",
                    s(&f["name"]),
                    limits_table(&f["limits"], &f["chosen_limits"], "default")
                )
            })?;
        }
        FnCommand::Pin { name, version } | FnCommand::Unpin { name, version } => {
            let pinned = matches!(command, FnCommand::Pin { .. });
            let v = client.call(
                "PATCH",
                &format!("{fns}/{name}/versions/{version}"),
                Some(&json!({ "pinned": pinned })),
            )?;
            print(args, &v, |_| {
                let verb = if pinned { "pinned" } else { "unpinned" };
                format!("{verb} {name} version {version}\n")
            })?;
        }
        FnCommand::Prune { name, keep } => {
            let r = client.call(
                "POST",
                &format!("{fns}/{name}/versions/prune"),
                Some(&json!({ "keep": keep })),
            )?;
            print(args, &r, |r| {
                let pruned: Vec<String> = r["pruned"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(s)
                    .collect();
                let kept = s(&r["kept"]);
                match pruned.len() {
                    0 => format!(
                        "nothing to prune: {name} keeps its {kept} version{}\n",
                        if kept == "1" { "" } else { "s" }
                    ),
                    n => format!(
                        "pruned {n} version{} of {name} ({}); {kept} left\n",
                        if n == 1 { "" } else { "s" },
                        pruned.join(", ")
                    ),
                }
            })?;
        }
        FnCommand::Logs {
            name,
            follow,
            outcome,
            limit,
        } => {
            let mut path = format!("{fns}/{name}/invocations?limit={limit}");
            if let Some(o) = outcome {
                path += &format!("&outcome={o}");
            }
            let list = client.call("GET", &path, None)?;
            let mut records: Vec<Value> = list.as_array().cloned().unwrap_or_default();
            records.reverse();
            // A scheduled run is told by its schedule's cron expression, fetched once (and
            // again for a schedule added while following).
            let mut crons = std::collections::HashMap::new();
            let mut name_schedule = |r: &Value| -> Result<Option<String>> {
                let Some(id) = r["schedule_id"].as_i64() else {
                    return Ok(None);
                };
                if !crons.contains_key(&id) {
                    let list = client.call("GET", &format!("{fns}/{name}/schedules"), None)?;
                    for sc in list.as_array().into_iter().flatten() {
                        if let Some(i) = sc["id"].as_i64() {
                            crons.insert(i, s(&sc["cron"]));
                        }
                    }
                    // Deleted since: its id alone.
                    crons.entry(id).or_insert_with(String::new);
                }
                Ok(crons.get(&id).filter(|c| !c.is_empty()).cloned())
            };
            if args.json && !*follow {
                // One JSON document, as every other command prints; only a stream is NDJSON.
                println!("{}", serde_json::to_string_pretty(&records)?);
                return Ok(ExitCode::SUCCESS);
            }
            if !args.json {
                println!("{}", record_header());
            }
            for r in &records {
                let cron = if args.json { None } else { name_schedule(r)? };
                print_record(args, r, cron.as_deref())?;
            }
            if *follow {
                client.follow(&format!("{fns}/{name}/invocations/tail"), |r| {
                    if outcome
                        .as_ref()
                        .is_none_or(|o| r["outcome"].as_str() == Some(o))
                    {
                        let cron = if args.json { None } else { name_schedule(r)? };
                        print_record(args, r, cron.as_deref())?;
                    }
                    Ok(())
                })?;
            }
        }
        FnCommand::Delete { name, yes } => {
            confirm(
                *yes,
                &format!("deleting {name} with its versions, variables, schedules and records"),
            )?;
            client.call("DELETE", &format!("{fns}/{name}"), None)?;
            print(args, &json!({ "deleted": name }), |_| {
                format!("deleted {name}\n")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `picloud whoami`: which token this is, and its tenant.
pub fn run_whoami(args: &ClientArgs) -> Result<ExitCode> {
    let client = Client::new(args)?;
    let me = client.call("GET", "/whoami", None)?;
    print(args, &me, |me| match me["tenant"].as_str() {
        Some(tenant) => format!(
            "token {} of tenant {tenant} at {}\n",
            s(&me["token"]),
            client.base
        ),
        None => format!("admin token {} at {}\n", s(&me["token"]), client.base),
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_env(args: &ClientArgs, command: &EnvCommand) -> Result<ExitCode> {
    let client = Client::new(args)?;
    let tenant = client.tenant(args)?;
    match command {
        EnvCommand::Set {
            function,
            name,
            value,
            secret,
        } => {
            let v = client.call(
                "PUT",
                &format!("/tenants/{tenant}/functions/{function}/env/{name}"),
                Some(&json!({ "value": value, "secret": secret })),
            )?;
            let kind = if *secret { "secret" } else { "variable" };
            print(args, &v, |_| format!("set {kind} {name} of {function}\n"))?;
        }
        EnvCommand::Unset { function, name } => {
            client.call(
                "DELETE",
                &format!("/tenants/{tenant}/functions/{function}/env/{name}"),
                None,
            )?;
            print(args, &json!({ "unset": name }), |_| {
                format!("unset {name} of {function}\n")
            })?;
        }
        EnvCommand::List { function } => {
            let list = client.call(
                "GET",
                &format!("/tenants/{tenant}/functions/{function}/env"),
                None,
            )?;
            print(args, &list, |l| {
                let mut out = String::new();
                for v in l.as_array().into_iter().flatten() {
                    let value = if v["secret"].as_bool() == Some(true) {
                        "(secret)".to_string()
                    } else {
                        s(&v["value"])
                    };
                    out += &format!("{}={value}\n", s(&v["name"]));
                }
                out
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_schedule(args: &ClientArgs, command: &ScheduleCommand) -> Result<ExitCode> {
    let client = Client::new(args)?;
    let tenant = client.tenant(args)?;
    let base = |function: &str| format!("/tenants/{tenant}/functions/{function}/schedules");
    let line = |v: &Value| {
        let next = v["next_run_at"]
            .as_i64()
            .map_or_else(|| "-".to_string(), utc);
        let state = if v["enabled"].as_bool() == Some(true) {
            "active"
        } else {
            "paused"
        };
        format!(
            "{:>5}  {:<24} {:<20} {:<7} {:<25} {}\n",
            s(&v["id"]),
            s(&v["cron"]),
            s(&v["time_zone"]),
            state,
            next,
            s(&v["skipped_ticks"])
        )
    };
    let header = format!(
        "{:>5}  {:<24} {:<20} {:<7} {:<25} SKIPPED\n",
        "ID", "CRON", "TIME ZONE", "STATE", "NEXT RUN (UTC)"
    );
    match command {
        ScheduleCommand::Add {
            function,
            cron,
            time_zone,
            payload,
            paused,
        } => {
            let payload: Value = match payload {
                Some(text) => serde_json::from_str(text).context("--payload is not JSON")?,
                None => Value::Null,
            };
            let v = client.call(
                "POST",
                &base(function),
                Some(&json!({ "cron": cron, "time_zone": time_zone, "payload": payload, "enabled": !paused })),
            )?;
            print(args, &v, |v| format!("{header}{}", line(v)))?;
        }
        ScheduleCommand::List { function } => {
            let list = client.call("GET", &base(function), None)?;
            print(args, &list, |l| {
                let mut out = header.clone();
                for v in l.as_array().into_iter().flatten() {
                    out += &line(v);
                }
                out
            })?;
        }
        ScheduleCommand::Rm { function, id } => {
            client.call("DELETE", &format!("{}/{id}", base(function)), None)?;
            print(args, &json!({ "deleted": id }), |_| {
                format!("deleted schedule {id} of {function}\n")
            })?;
        }
        ScheduleCommand::Pause { function, id } | ScheduleCommand::Resume { function, id } => {
            let enabled = matches!(command, ScheduleCommand::Resume { .. });
            let v = client.call(
                "PATCH",
                &format!("{}/{id}", base(function)),
                Some(&json!({ "enabled": enabled })),
            )?;
            print(args, &v, |v| format!("{header}{}", line(v)))?;
        }
        ScheduleCommand::Runs {
            function,
            id,
            limit,
        } => {
            let runs = client.call(
                "GET",
                &format!("{}/{id}/runs?limit={limit}", base(function)),
                None,
            )?;
            print(args, &runs, |l| {
                let mut out = format!(
                    "{:<25} {:<25} {:<14} BACKFILL\n",
                    "DUE (UTC)", "FINISHED (UTC)", "OUTCOME"
                );
                for r in l.as_array().into_iter().flatten() {
                    let outcome = match r["outcome"].as_str() {
                        Some(o) => o.to_string(),
                        None => "running".to_string(),
                    };
                    out += &format!(
                        "{:<25} {:<25} {:<14} {}\n",
                        when(&r["due_at"]),
                        when(&r["finished_at"]),
                        outcome,
                        if r["backfill"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        }
                    );
                }
                out
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_token(args: &ClientArgs, command: &TokenCommand) -> Result<ExitCode> {
    let client = Client::new(args)?;
    let base = |admin: bool| -> Result<String> {
        Ok(if admin {
            "/admin/tokens".to_string()
        } else {
            format!("/tenants/{}/tokens", client.tenant(args)?)
        })
    };
    match command {
        TokenCommand::Create { name, admin } => {
            let t = client.call("POST", &base(*admin)?, Some(&json!({ "name": name })))?;
            print(args, &t, |t| {
                format!(
                    "created token {} (id {}); its secret, shown once:\n\n    {}\n\n",
                    s(&t["name"]),
                    s(&t["id"]),
                    s(&t["token"])
                )
            })?;
        }
        TokenCommand::List { admin } => {
            let list = client.call("GET", &base(*admin)?, None)?;
            print(args, &list, |l| {
                let mut out = format!(
                    "{:>16}  {:<32} {:<24} REVOKED (UTC)\n",
                    "ID", "NAME", "CREATED (UTC)"
                );
                for t in l.as_array().into_iter().flatten() {
                    out += &format!(
                        "{:>16}  {:<32} {:<24} {}\n",
                        s(&t["id"]),
                        s(&t["name"]),
                        when(&t["created_at"]),
                        when(&t["revoked_at"])
                    );
                }
                out
            })?;
        }
        TokenCommand::Revoke { id, admin, yes } => {
            // Revoking the token this command runs with locks its user out.
            let me = client.call("GET", "/whoami", None)?;
            if me["id"].as_i64() == Some(*id) {
                confirm(*yes, "revoking the token you are using")?;
            }
            client.call("DELETE", &format!("{}/{id}", base(*admin)?), None)?;
            print(args, &json!({ "revoked": id }), |_| {
                format!("revoked token {id}\n")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_tenant(args: &ClientArgs, command: &TenantCommand) -> Result<ExitCode> {
    let client = Client::new(args)?;
    match command {
        TenantCommand::Create { name } => {
            let t = client.call("POST", "/tenants", Some(&json!({ "name": name })))?;
            print(args, &t, |t| format!("created tenant {}\n", s(&t["name"])))?;
        }
        TenantCommand::List => {
            let list = client.call("GET", "/tenants", None)?;
            print(args, &list, |l| {
                l.as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| format!("{}\n", s(&t["name"])))
                    .collect()
            })?;
        }
        TenantCommand::Show { name } => {
            let t = client.call("GET", &format!("/tenants/{name}"), None)?;
            print(args, &t, show_tenant)?;
        }
        TenantCommand::Ceilings {
            name,
            limits,
            sub_minute_schedules,
        } => {
            let path = format!("/tenants/{name}");
            let mut t = client.call("GET", &path, None)?;
            if limits.any() {
                t = client.call(
                    "PUT",
                    &format!("{path}/ceilings"),
                    Some(&limits.apply(&t["chosen_ceilings"])),
                )?;
            }
            if let Some(allowed) = sub_minute_schedules {
                t = client.call(
                    "PATCH",
                    &path,
                    Some(&json!({ "sub_minute_schedules": allowed })),
                )?;
            }
            print(args, &t, show_tenant)?;
        }
        TenantCommand::Delete { name, yes } => {
            confirm(
                *yes,
                &format!(
                    "deleting tenant {name} with its tokens, functions, schedules, records and keys"
                ),
            )?;
            client.call("DELETE", &format!("/tenants/{name}"), None)?;
            print(args, &json!({ "deleted": name }), |_| {
                format!("deleted tenant {name}\n")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A tenant as `tenant show` prints it.
fn show_tenant(t: &Value) -> String {
    let sub_minute = if t["sub_minute_schedules"].as_bool() == Some(true) {
        "allowed"
    } else {
        "not allowed (an admin's choice: tenant ceilings --sub-minute-schedules yes)"
    };
    format!(
        "tenant {} (created {})\nceilings on its functions' limits:\n{}schedules more often than once a minute: {sub_minute}\n",
        s(&t["name"]),
        when(&t["created_at"]),
        limits_table(&t["ceilings"], &t["chosen_ceilings"], "the platform's"),
    )
}

pub fn run_kv(args: &ClientArgs, command: &KvCommand) -> Result<ExitCode> {
    let client = Client::new(args)?;
    let tenant = client.tenant(args)?;
    let base = format!("/tenants/{tenant}/kv");
    match command {
        KvCommand::List { prefix, limit } => {
            let mut keys: Vec<Value> = Vec::new();
            let mut after: Option<String> = None;
            while keys.len() < *limit as usize {
                let page = (*limit as usize - keys.len()).min(1000);
                let mut path = format!("{base}?limit={page}&prefix={}", encode(prefix));
                if let Some(a) = &after {
                    path += &format!("&after={}", encode(a));
                }
                let answer = client.call("GET", &path, None)?;
                keys.extend(answer["keys"].as_array().cloned().unwrap_or_default());
                match answer["next"].as_str() {
                    Some(next) => after = Some(next.to_string()),
                    None => break,
                }
            }
            print(args, &Value::Array(keys), |l| {
                l.as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| format!("{}\n", s(k)))
                    .collect()
            })?;
        }
        KvCommand::Get { key } => {
            let e = client.call("GET", &format!("{base}/entry?key={}", encode(key)), None)?;
            print(args, &e, |e| {
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&e["value"]).unwrap_or_default()
                )
            })?;
        }
        KvCommand::Rm { key } => {
            client.call("DELETE", &format!("{base}/entry?key={}", encode(key)), None)?;
            print(args, &json!({ "deleted": key }), |_| {
                format!("deleted key {key:?}\n")
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `text` as a query value: unreserved bytes as they are, every other byte `%XX`.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The columns of [`print_record`]'s line, with its widths.
fn record_header() -> String {
    format!(
        "{:<24}  {:<8} {:>7} {:<14} {:>6} {:>12} {:>12} {:>8}  REQUEST",
        "AT (UTC)", "TRIGGER", "VERSION", "OUTCOME", "STATUS", "DURATION ms", "FUEL", "MEM MiB"
    )
}

/// One record: a line, then its message and logs indented; or its JSON with `--json`.
fn print_record(args: &ClientArgs, r: &Value, cron: Option<&str>) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{r}")?;
        return Ok(());
    }
    let what = match (
        r["method"].as_str(),
        r["path"].as_str(),
        r["schedule_id"].as_i64(),
    ) {
        (Some(m), Some(p), _) => format!("{m} {p}"),
        (_, _, Some(id)) => match cron {
            Some(cron) => format!("schedule {id} ({cron})"),
            None => format!("schedule {id}"),
        },
        _ => "-".to_string(),
    };
    writeln!(
        out,
        "{:<24}  {:<8} {:>7} {:<14} {:>6} {:>12.3} {:>12} {:>8.1}  {what}",
        utc(r["at"].as_i64().unwrap_or(0)),
        s(&r["trigger"]),
        format!("v{}", s(&r["version"])),
        s(&r["outcome"]),
        s(&r["status"]),
        r["duration_us"].as_f64().unwrap_or(0.0) / 1000.0,
        s(&r["fuel_used"]),
        r["peak_memory_bytes"].as_f64().unwrap_or(0.0) / 1_048_576.0,
    )?;
    if let Some(m) = r["message"].as_str() {
        writeln!(out, "    {m}")?;
    }
    for line in r["logs"].as_array().into_iter().flatten() {
        writeln!(out, "    [{}] {}", s(&line["level"]), s(&line["message"]))?;
    }
    out.flush()?;
    Ok(())
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
/// A Unix-milliseconds field as ISO 8601 in UTC; `-` when absent.
fn when(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".to_string(), utc)
}

fn utc(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The function on its tenant's own host (`{tenant}.{functions domain}`, from the API's `host`),
/// with the scheme and port of `base`: `http://demo.localhost:8080/hello`.
fn own_url(base: &str, function: &serde_json::Value) -> Option<String> {
    let host = function["host"].as_str()?;
    let name = function["name"].as_str()?;
    let (scheme, rest) = base.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let port = authority
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map(|(_, p)| format!(":{p}"))
        .unwrap_or_default();
    Some(format!("{scheme}://{host}{port}/{name}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_unix_milliseconds() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(1_795_753_115_985), "2026-11-27T04:18:35.985Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn the_own_origin_url_takes_the_servers_scheme_and_port() {
        let f = serde_json::json!({ "name": "hello", "host": "demo.localhost" });
        assert_eq!(
            super::own_url("http://127.0.0.1:8080", &f).as_deref(),
            Some("http://demo.localhost:8080/hello")
        );
        assert_eq!(
            super::own_url("https://picloud.example.com/", &f).as_deref(),
            Some("https://demo.localhost/hello")
        );
        let none = serde_json::json!({ "name": "hello", "host": null });
        assert_eq!(super::own_url("http://127.0.0.1:8080", &none), None);
    }
}
