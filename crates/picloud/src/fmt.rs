//! `picloud fmt`: formats Rhai scripts in place, checks them (`--check`), or formats standard
//! input to standard output (`-`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use picloud_rhai_fmt::FormatError;

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// Scripts to format in place; `-` reads standard input and writes standard output.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Change nothing: list the files that are not formatted and exit 1 if there are any.
    #[arg(long)]
    pub check: bool,
}

/// Exit 0 when everything is (now) formatted; 1 when `--check` found unformatted files; 2 when
/// a script could not be formatted (a parse error, shown as `FILE:LINE:COLUMN: message`).
pub fn run(args: &FmtArgs) -> Result<ExitCode> {
    let mut unformatted = 0;
    let mut failed = 0;
    for path in &args.files {
        let stdin = path.as_os_str() == "-";
        let source = if stdin {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            s
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        let name = if stdin {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        let formatted = match picloud_rhai_fmt::format(&source) {
            Ok(f) => f,
            Err(FormatError::Parse {
                message,
                line,
                column,
            }) => {
                eprintln!("{name}:{line}:{column}: {message}");
                failed += 1;
                continue;
            }
            Err(e) => {
                eprintln!("{name}: {e}");
                failed += 1;
                continue;
            }
        };
        if args.check {
            if formatted != source {
                println!("{name}");
                unformatted += 1;
            }
        } else if stdin {
            std::io::stdout()
                .write_all(formatted.as_bytes())
                .context("writing standard output")?;
        } else if formatted != source {
            std::fs::write(path, formatted).with_context(|| format!("writing {name}"))?;
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else if unformatted > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
