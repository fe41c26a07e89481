//! The formatter's three properties, checked on every fixture (`tests/fixtures/`, one per
//! construct) and on every script of the corpus (`tests/corpus/`, realistic scripts): the
//! output is a fixed point (`fmt(fmt(x)) == fmt(x)`), parses to the same AST as the input
//! (positions ignored), and holds every comment of the input, in order. Each output is also
//! compared with its reviewed snapshot (`tests/snapshots/`).

use std::path::Path;

use picloud_rhai_fmt::{TAB, WIDTH, comments_in, format, shape};

fn scripts(dir: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let mut scripts: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read");
            let stem = p.file_stem().and_then(|s| s.to_str()).expect("name");
            (stem.to_string(), text)
        })
        .collect();
    scripts.sort();
    scripts
}

fn ast(name: &str, source: &str) -> String {
    let ast = picloud_rhai_fmt::engine()
        .compile(source)
        .unwrap_or_else(|e| panic!("{name}: does not parse: {e}\n{source}"));
    shape(&ast)
}

/// Formats `source` and checks the three properties; returns the output.
fn check(name: &str, source: &str) -> String {
    let once = format(source).unwrap_or_else(|e| panic!("{name}: {e}"));
    let twice = format(&once).unwrap_or_else(|e| panic!("{name} formatted again: {e}"));
    assert_eq!(once, twice, "{name}: fmt(fmt(x)) != fmt(x)");
    assert_eq!(
        ast(name, source),
        ast(name, &once),
        "{name}: the program changed"
    );
    assert_eq!(
        comments_in(source).expect("lex input"),
        comments_in(&once).expect("lex output"),
        "{name}: a comment was lost or moved"
    );
    assert!(
        once.ends_with('\n') && !once.ends_with("\n\n"),
        "{name}: one final newline"
    );
    once
}

/// Lines past the width are allowed only where nothing could break them: one token too long
/// by itself (a string, a comment) after its indentation and whatever must stay on its line.
fn assert_within_width(name: &str, text: &str) {
    for line in text.lines() {
        let width: usize = line.chars().map(|c| if c == '\t' { TAB } else { 1 }).sum();
        let breakable = [", ", " && ", " || ", " + ", ")."];
        assert!(
            width <= WIDTH || !breakable.iter().any(|b| line.contains(b)),
            "{name}: a line over {WIDTH} columns that could have been broken: {line}"
        );
    }
}

#[test]
fn every_fixture_keeps_the_properties_and_matches_its_snapshot() {
    let fixtures = scripts("fixtures");
    assert!(fixtures.len() >= 20, "one fixture per construct");
    for (name, text) in fixtures {
        let out = check(&name, &text);
        assert_within_width(&name, &out);
        insta::assert_snapshot!(format!("fixture_{name}"), out);
    }
}

#[test]
fn every_corpus_script_keeps_the_properties_and_matches_its_snapshot() {
    let corpus = scripts("corpus");
    assert!(corpus.len() >= 5, "the corpus is there");
    for (name, text) in corpus {
        let out = check(&name, &text);
        assert_within_width(&name, &out);
        insta::assert_snapshot!(name, out);
    }
}
