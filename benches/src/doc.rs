//! Writing a benchmark's generated section of `docs/performance.md`.

use std::path::Path;

use anyhow::Result;

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
