//! `picloud admin`: what an operator does on the database itself, without the API — today,
//! making an admin token when every admin token is lost (the API needs one to make another).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use picloud_edge::tokens::{generate_token, hash_token};
use picloud_store::validate_name;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The server's data directory: its embedded database is `picloud.db` there.
    #[arg(
        long,
        global = true,
        env = "PICLOUD_DATA_DIR",
        default_value = "./picloud-data"
    )]
    pub data_dir: PathBuf,
    /// The server's PostgreSQL URL, when it runs on PostgreSQL.
    #[arg(
        long,
        global = true,
        env = "PICLOUD_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make a new admin token straight in the database and print it once (for a lost admin
    /// token). On PostgreSQL running servers take it at once; on the embedded database,
    /// restart the server to use it.
    CreateToken {
        /// The token's name, shown in token lists.
        #[arg(long, default_value = "recovered-admin")]
        name: String,
    },
}

/// Runs `picloud admin …`.
///
/// # Errors
///
/// When the database cannot be opened or refuses the token.
pub async fn run(args: AdminArgs) -> Result<ExitCode> {
    let AdminCommand::CreateToken { name } = &args.command;
    validate_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    // Never a new, empty database: a token there would open nothing.
    let store =
        crate::serve::open_store(args.database_url.as_deref(), &args.data_dir, true).await?;
    let token = generate_token().context("no randomness for a token")?;
    let made = store
        .create_token(None, name, &hash_token(&token), true)
        .await
        .context("saving the token")?;
    println!(
        "Created admin token {name} (id {}; shown once, only its hash is stored):\n\n    {token}\n",
        made.id
    );
    if args.database_url.is_none() {
        println!(
            "Restart the server if it is running: it reads the embedded database's tokens at start."
        );
    }
    Ok(ExitCode::SUCCESS)
}
