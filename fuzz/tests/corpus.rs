//! The seed corpus (and whatever the fuzzer found that was committed there) replayed through
//! the fuzz checks on every test run: a fixed bug stays fixed without a fuzzing build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{target}'s seed corpus is too small: {}",
        files.len()
    );
    files
}

/// Replays `target`'s corpus through `check`; what each input came to, by file name.
fn replay<T: std::fmt::Debug>(target: &str, check: fn(&[u8]) -> T) -> BTreeMap<String, String> {
    let files = corpus(target);
    let mut failed = Vec::new();
    let mut results = BTreeMap::new();
    for file in &files {
        let data = std::fs::read(file).expect("a corpus file");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The check's own panic message (printed above) says what broke; go on to list all.
        match std::panic::catch_unwind(|| check(&data)) {
            Ok(result) => {
                results.insert(name, format!("{result:?}").trim_matches('"').to_string());
            }
            Err(_) => failed.push(name),
        }
    }
    assert!(
        failed.is_empty(),
        "inputs failing {target}'s check: {failed:#?}"
    );
    eprintln!("{target}: {} inputs replayed: {results:?}", files.len());
    results
}

#[test]
fn the_guest_corpus_passes() {
    let results = replay("guest", picloud_fuzz::guest::check);
    // The seeds reach every kind of ending, so the check is not vacuous.
    for (seed, kind) in [
        ("hello", "ok"),
        ("syntax-error", "script_error"),
        ("loop", "fuel_exhausted"),
        ("string-bomb", "memory_limit"),
        ("recursion", "stack_overflow"),
        ("big-response", "ok"),
        // Issue 18: deep and long scripts, framing headers, a switching status, sleep, a NUL.
        ("deep-parens", "stack_overflow"),
        ("flat-sum", "stack_overflow"),
        ("dot-chain", "stack_overflow"),
        ("framing-headers", "ok"),
        ("switching-status", "script_error"),
        ("sleep", "script_error"),
        ("nul-throw", "script_error"),
        ("clock", "ok"),
    ] {
        assert_eq!(
            results.get(seed).map(String::as_str),
            Some(kind),
            "{seed}: {results:?}"
        );
    }
}

#[test]
fn the_api_corpus_passes() {
    let results = replay("api", picloud_fuzz::api::check);
    for (seed, status) in [
        ("tenant", "201"),
        ("tenant-not-json", "400"),
        ("tenant-no-auth", "401"),
        ("tenant-by-tenant", "403"),
        ("function-bad-script", "422"),
        ("invoke", "200"),
        // Issue 18: deep scripts on every route that takes one, NULs.
        ("format-deep-parens", "422"),
        ("format-flat-sum", "422"),
        ("format-dot-chain", "422"),
        ("function-deep", "422"),
        ("version-deep", "422"),
        ("invoke-deep", "422"),
        ("version-nul", "422"),
        ("env-nul", "422"),
        ("function-forward-authorization", "200"),
    ] {
        assert_eq!(
            results.get(seed).map(String::as_str),
            Some(status),
            "{seed}: {results:?}"
        );
    }
}
