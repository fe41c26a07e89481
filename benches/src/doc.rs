//! Writing a benchmark's generated section of `docs/performance.md`.

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

/// Records a benchmark's run: `benches/results/{name}.json` and the `{name}-bench` section of
/// `docs/performance.md` (also printed).
pub fn publish(root: &Path, name: &str, report: &Value, section: &str) -> Result<()> {
    let results = root.join("benches/results");
    std::fs::create_dir_all(&results)?;
    std::fs::write(
        results.join(format!("{name}.json")),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    splice(
        &root.join("docs/performance.md"),
        &format!("{name}-bench"),
        section,
    )?;
    println!("{section}");
    Ok(())
}

/// Replaces the section of `path` between `<!-- {name}:start -->` and `<!-- {name}:end -->`,
/// leaving the rest alone (appending the section when the markers are missing).
pub fn splice(path: &Path, name: &str, section: &str) -> Result<()> {
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (doc.find(&start), doc.find(&end)) {
        (Some(a), Some(b)) if a < b => format!(
            "{}{start}\n{section}\n{end}{}",
            &doc[..a],
            &doc[b + end.len()..]
        ),
        _ => format!("{doc}\n{start}\n{section}\n{end}\n"),
    };
    std::fs::write(path, new)?;
    Ok(())
}
