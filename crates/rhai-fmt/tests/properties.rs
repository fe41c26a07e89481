//! Every corpus script formats to its reviewed snapshot (`tests/snapshots/`), idempotently, with
//! one final newline and no list line past the width. (The same program and every comment kept
//! are checked inside `format` itself, which refuses otherwise.)

use std::path::Path;

fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut scripts: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read");
            (p.display().to_string(), text)
        })
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 3, "the corpus is there");
    scripts
}

#[test]
fn every_corpus_script_formats_idempotently() {
    for (name, text) in corpus() {
        let once = picloud_rhai_fmt::format(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let stem = Path::new(&name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("script")
            .to_string();
        insta::assert_snapshot!(stem, once);
        let twice = picloud_rhai_fmt::format(&once).unwrap_or_else(|e| panic!("{name} again: {e}"));
        assert_eq!(once, twice, "{name}: not idempotent");
        assert!(
            once.ends_with('\n') && !once.ends_with("\n\n"),
            "{name}: one final newline"
        );
        for line in once.lines() {
            let width: usize = line
                .chars()
                .map(|c| if c == '\t' { picloud_rhai_fmt::TAB } else { 1 })
                .sum();
            assert!(
                width <= picloud_rhai_fmt::WIDTH || !line.contains(", "),
                "{name}: a list line over the width: {line}"
            );
        }
    }
}
