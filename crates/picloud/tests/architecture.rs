//! The workspace keeps the layout docs/architecture.md draws: each crate depends only on the
//! crates its line in the `arrows` block lists, and the binaries that must stay thin never
//! link what the block forbids them, however far down the dependency graph it hides. The
//! rules are read from the document, so the picture and the check cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

const DOC: &str = include_str!("../../../docs/architecture.md");

/// What the document allows: for each workspace crate, the workspace crates it may depend on,
/// and the packages it may never reach.
#[derive(Debug, Default, Clone)]
struct Rules {
    allowed: BTreeMap<String, BTreeSet<String>>,
    never: BTreeMap<String, BTreeSet<String>>,
}

/// Reads the fenced block tagged `arrows`: `a -> b c` allows a's arrows to b and c (a line
/// `a ->` allows none); `a !-> x y` forbids a to reach x or y at any depth.
fn rules(doc: &str) -> Rules {
    let block = doc
        .split("```arrows\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/architecture.md has an ```arrows block");
    let mut rules = Rules::default();
    for line in block.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (from, to, table) = if let Some((from, to)) = line.split_once("!->") {
            (from, to, &mut rules.never)
        } else if let Some((from, to)) = line.split_once("->") {
            (from, to, &mut rules.allowed)
        } else {
            panic!("not an arrow: {line:?}");
        };
        table
            .entry(from.trim().to_string())
            .or_default()
            .extend(to.split_whitespace().map(str::to_string));
    }
    assert!(!rules.allowed.is_empty(), "the arrows block allows nothing");
    rules
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Whether a dependency edge is part of what a crate builds (normal or build), not only of its
/// tests.
fn builds(kinds: &Value) -> bool {
    kinds
        .as_array()
        .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].as_str() != Some("dev")))
}

/// Every way the workspace breaks the rules, in words.
fn violations(meta: &Value, rules: &Rules) -> Vec<String> {
    let packages: BTreeMap<&str, &Value> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p))
        .collect();
    let name = |id: &str| packages[id]["name"].as_str().expect("name").to_string();
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .map(|m| m.as_str().expect("an id"))
        .collect();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve")
        .iter()
        .map(|n| (n["id"].as_str().expect("id"), n))
        .collect();
    let mut found = Vec::new();
    for &member in &members {
        let from = name(member);
        let Some(allowed) = rules.allowed.get(&from) else {
            found.push(format!(
                "{from} has no line in the arrows block: place it in the layout"
            ));
            continue;
        };
        let mut reached = BTreeSet::new();
        let mut todo = vec![member];
        while let Some(id) = todo.pop() {
            for dep in nodes[id]["deps"].as_array().expect("deps") {
                if !builds(&dep["dep_kinds"]) {
                    continue;
                }
                let dep_id = dep["pkg"].as_str().expect("pkg");
                if id == member && members.contains(dep_id) && !allowed.contains(&name(dep_id)) {
                    found.push(format!(
                        "{from} -> {}: not an arrow docs/architecture.md allows",
                        name(dep_id)
                    ));
                }
                if reached.insert(dep_id) {
                    todo.push(dep_id);
                }
            }
        }
        for forbidden in rules.never.get(&from).into_iter().flatten() {
            if reached.iter().any(|&id| &name(id) == forbidden) {
                found.push(format!(
                    "{from} reaches {forbidden}, which docs/architecture.md forbids it"
                ));
            }
        }
    }
    for listed in rules.allowed.keys().chain(rules.never.keys()) {
        if !members.iter().any(|&m| &name(m) == listed) {
            found.push(format!(
                "{listed} is in the arrows block but not in the workspace"
            ));
        }
    }
    found
}

#[test]
fn the_workspace_keeps_the_layout_docs_architecture_draws() {
    let found = violations(&metadata(), &rules(DOC));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The check can fail: the real graph against rules with one arrow taken out and one package
/// forbidden that the executor does link.
#[test]
fn an_arrow_the_layout_forbids_is_caught() {
    let meta = metadata();
    let mut strict = rules(DOC);
    strict
        .allowed
        .get_mut("picloud-executor-core")
        .expect("the executor has a line")
        .remove("picloud-executor-protocol");
    strict
        .never
        .entry("picloud-executor".into())
        .or_default()
        .insert("wasmtime".into());
    strict.allowed.remove("picloud-daemon");
    let found = violations(&meta, &strict);
    for expected in [
        "picloud-executor-core -> picloud-executor-protocol: not an arrow",
        "picloud-executor reaches wasmtime",
        "picloud-daemon has no line",
    ] {
        assert!(
            found.iter().any(|f| f.starts_with(expected)),
            "{expected:?} not in {found:#?}"
        );
    }
}
