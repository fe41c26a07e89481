//! `docs/operations.md` names every flag of every server binary, with its variable and the
//! default the binary shows.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::workspace_bin;

/// `--help` of a binary, as (flag, variable, default) per option.
fn options(bin: &Path, args: &[&str]) -> Vec<(String, Option<String>, Option<String>)> {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .env("COLUMNS", "1000")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(out.status.success(), "{} --help", bin.display());
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    // An option's text runs from its `--flag` line to the next option.
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let flag = trimmed
            .split_whitespace()
            .find(|w| w.starts_with("--"))
            .filter(|_| trimmed.starts_with('-'));
        match (flag, blocks.last_mut()) {
            (Some(flag), _) => blocks.push((flag.trim_end_matches(',').to_string(), String::new())),
            (None, Some((_, text))) => text.push_str(line),
            (None, None) => {}
        }
    }
    let mut options = Vec::new();
    for (flag, text) in blocks {
        if flag == "--help" || flag == "--version" {
            continue;
        }
        let between = |start: &str| {
            text.split(start)
                .nth(1)
                .and_then(|rest| rest.split(']').next())
                .map(|s| s.trim_end_matches('=').to_string())
        };
        options.push((flag, between("[env: "), between("[default: ")));
    }
    assert!(
        !options.is_empty(),
        "{}: no options read from --help",
        bin.display()
    );
    options
}

#[test]
fn the_operations_guide_names_every_flag_with_its_variable_and_default() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/operations.md"),
    )
    .expect("docs/operations.md");
    let table: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `--")).collect();
    let binaries: [(PathBuf, &[&str]); 4] = [
        (PathBuf::from(env!("CARGO_BIN_EXE_picloud")), &["serve"]),
        (workspace_bin("picloud-manager"), &[]),
        (workspace_bin("picloud-orchestrator"), &[]),
        (workspace_bin("picloud-executor"), &[]),
    ];
    for (bin, args) in binaries {
        for (flag, env, default) in options(&bin, args) {
            let row = table
                .iter()
                .find(|r| r.starts_with(&format!("| `{flag}` |")))
                .unwrap_or_else(|| {
                    panic!(
                        "docs/operations.md has no row for {flag} ({})",
                        bin.display()
                    )
                });
            let env = env.unwrap_or_else(|| panic!("{flag} has no environment variable"));
            assert!(
                row.contains(&format!("`{env}`")),
                "{flag}: {env} is not in its row: {row}"
            );
            if let Some(default) = default {
                assert!(
                    row.contains(&format!("`{default}`")),
                    "{flag} ({}): its default {default} is not in its row: {row}",
                    bin.display()
                );
            }
        }
    }
}
