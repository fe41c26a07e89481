//! One version for the whole project (DESIGN.md §7): the workspace's (which this crate
//! inherits), `dashboard/package.json`'s and the *Current versions* table of
//! `docs/versioning.md` must be equal.

use std::path::Path;

fn repo(path: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn the_workspace_the_dashboard_and_the_docs_carry_one_version() {
    let workspace = env!("CARGO_PKG_VERSION");
    let package: serde_json::Value =
        serde_json::from_str(&repo("dashboard/package.json")).expect("package.json is JSON");
    assert_eq!(
        package["version"].as_str(),
        Some(workspace),
        "dashboard/package.json"
    );

    let doc = repo("docs/versioning.md");
    let table = doc
        .split("## Current versions")
        .nth(1)
        .expect("docs/versioning.md has a Current versions section");
    let rows: Vec<(&str, &str)> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| part"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            Some((*cells.get(1)?, *cells.last()?))
        })
        .collect();
    for file in ["`Cargo.toml`", "`dashboard/package.json`"] {
        let row = rows.iter().find(|(where_, _)| *where_ == file);
        assert_eq!(
            row.map(|r| r.1),
            Some(workspace),
            "docs/versioning.md's row for {file}: {rows:?}"
        );
    }
}
