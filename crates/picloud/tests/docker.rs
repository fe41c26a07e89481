//! `docker/`: no Docker engine runs on the machines the tests run on, so the images are never
//! built here. What can be checked is: `hadolint` accepts the Dockerfile, and the Dockerfile and
//! the compose file name only what the project has — the same build commands as its scripts,
//! files that exist, packages and binaries of the workspace, flags (environment variables)
//! that its binaries take.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::workspace_bin;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments left out.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// Stage name → its instructions.
fn stages(dockerfile: &str) -> BTreeMap<String, Vec<String>> {
    let mut stages = BTreeMap::new();
    let mut name = String::new();
    for i in instructions(dockerfile) {
        if let Some(from) = i.strip_prefix("FROM ") {
            name = from
                .split_once(" AS ")
                .map(|(_, n)| n.trim().to_string())
                .expect("every stage is named");
            stages.insert(name.clone(), Vec::new());
        } else {
            stages.get_mut(&name).expect("a stage").push(i);
        }
    }
    stages
}

/// The `PICLOUD_*` variables a binary takes, from its `--help`.
fn env_vars(bin: &Path, args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(out.status.success(), "{} --help", bin.display());
    picloud_vars(&String::from_utf8_lossy(&out.stdout))
}

fn picloud_vars(text: &str) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    for (at, _) in text.match_indices("PICLOUD_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        vars.insert(name);
    }
    vars
}

/// The image's binary and the arguments before `--help`, by stage.
fn image_binaries() -> BTreeMap<&'static str, (PathBuf, Vec<&'static str>)> {
    BTreeMap::from([
        (
            "picloud",
            (PathBuf::from(env!("CARGO_BIN_EXE_picloud")), vec!["serve"]),
        ),
        ("manager", (workspace_bin("picloud-manager"), vec![])),
        (
            "orchestrator",
            (workspace_bin("picloud-orchestrator"), vec![]),
        ),
        ("executor", (workspace_bin("picloud-executor"), vec![])),
    ])
}

#[test]
fn hadolint_accepts_the_dockerfile() {
    let out = Command::new("hadolint")
        .arg(root().join("docker/Dockerfile"))
        .output()
        .unwrap_or_else(|e| {
            panic!("hadolint is required (scripts/setup installs it from PyPI): {e}")
        });
    assert!(
        out.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dockerfile_builds_as_the_project_does() {
    let dockerfile = read("docker/Dockerfile");
    let stages = stages(&dockerfile);
    for image in image_binaries().keys() {
        assert!(stages.contains_key(*image), "no `{image}` stage");
    }
    // The same commands as the project's scripts.
    let setup = read("scripts/setup");
    let dashboard = read("scripts/build-dashboard");
    for (command, script, name) in [
        ("rustup target add wasm32-wasip1", &setup, "scripts/setup"),
        (
            "npm ci --no-audit --no-fund --loglevel=error",
            &dashboard,
            "scripts/build-dashboard",
        ),
        (
            "npm run --silent build",
            &dashboard,
            "scripts/build-dashboard",
        ),
    ] {
        assert!(
            dockerfile.contains(command),
            "the Dockerfile does not run `{command}`"
        );
        assert!(
            script.contains(command),
            "{name} no longer runs `{command}`"
        );
    }
    // The toolchain: the workspace's rust-version.
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version")
        .trim_matches('"');
    assert!(
        dockerfile.contains(&format!("FROM rust:{rust_version}-")),
        "the build stage is not on Rust {rust_version}"
    );
    // Every file copied from the context exists.
    for i in stages.values().flatten() {
        if let Some(args) = i.strip_prefix("COPY ")
            && !args.starts_with("--from")
        {
            let parts: Vec<&str> = args.split_whitespace().collect();
            for src in &parts[..parts.len() - 1] {
                assert!(root().join(src).exists(), "COPY {src}: no such file");
            }
        }
    }
    // The packages built are the workspace's, and each image copies a binary built there.
    let build = stages["build"]
        .iter()
        .find(|i| i.contains("cargo build"))
        .expect("a cargo build");
    assert!(build.contains("--release --locked"), "{build}");
    let built: BTreeSet<&str> = build
        .split(" -p ")
        .skip(1)
        .filter_map(|p| p.split_whitespace().next())
        .collect();
    let members: BTreeSet<String> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"crates/"))
        .map(|l| l.trim_end_matches("\",").to_string())
        .map(|dir| {
            let crate_manifest = read(&format!("crates/{dir}/Cargo.toml"));
            crate_manifest
                .lines()
                .find_map(|l| l.strip_prefix("name = "))
                .expect("name")
                .trim_matches('"')
                .to_string()
        })
        .collect();
    for p in &built {
        assert!(members.contains(*p), "`-p {p}` is not a workspace package");
    }
    for (image, (bin, _)) in image_binaries() {
        let name = bin.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(built.contains(name), "{name} is not built");
        let copy = format!("COPY --from=build /src/target/release/{name} /usr/local/bin/{name}");
        assert!(
            stages[image].contains(&copy),
            "the {image} image does not copy {name}"
        );
    }
}

#[test]
fn the_images_and_compose_name_only_what_the_binaries_take() {
    let dockerfile = read("docker/Dockerfile");
    let stages = stages(&dockerfile);
    let binaries = image_binaries();
    let mut all = BTreeSet::new();
    for (image, (bin, args)) in &binaries {
        let takes = env_vars(bin, args);
        all.extend(takes.iter().cloned());
        let own: BTreeSet<String> = stages[*image]
            .iter()
            .filter_map(|i| i.strip_prefix("ENV "))
            .flat_map(picloud_vars)
            .collect();
        for var in &own {
            assert!(
                takes.contains(var),
                "the {image} image sets {var}, which its binary does not take"
            );
        }
    }
    // The runtime stage's settings are the executor's (the socket, the guest cache).
    let executor = env_vars(&binaries["executor"].0, &[]);
    for var in stages["runtime"]
        .iter()
        .filter_map(|i| i.strip_prefix("ENV "))
        .flat_map(picloud_vars)
    {
        assert!(
            executor.contains(&var),
            "the runtime stage sets {var}, which the executor does not take"
        );
    }
    let compose = read("docker/compose.yaml");
    let caddyfile = read("caddy/Caddyfile.cluster");
    for var in picloud_vars(&compose) {
        assert!(
            all.contains(&var) || caddyfile.contains(&format!("{{${var}")),
            "compose sets {var}, which neither a binary nor the Caddyfile takes"
        );
    }
    for target in compose
        .split("target: ")
        .skip(1)
        .filter_map(|t| t.split([' ', '}', '\n']).next())
    {
        assert!(
            stages.contains_key(target),
            "compose builds a missing target `{target}`"
        );
    }
    assert!(
        compose.contains("../caddy/Caddyfile.cluster:/etc/caddy/Caddyfile:ro"),
        "compose runs Caddy on the project's cluster Caddyfile"
    );
    assert!(root().join("caddy/Caddyfile.cluster").exists());
}
