//! Arbitrary input through the formatter: it never panics, refuses only what Rhai refuses, and
//! what it returns keeps the three properties (a fixed point, the same program, every comment).
#![no_main]

use libfuzzer_sys::fuzz_target;
use picloud_rhai_fmt::{FormatError, comments_in, engine, format, shape};

/// `shape` with each `cases: {…}` map of a `switch` taken out (its keys are value hashes).
fn without_case_keys(shape: &str) -> String {
    let mut out = String::new();
    let mut rest = shape;
    while let Some(i) = rest.find("cases: {") {
        out.push_str(&rest[..i]);
        let mut depth = 0;
        let mut end = rest.len();
        for (j, c) in rest[i + 7..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 7 + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let engine = engine();
    let parsed = engine.compile(source);
    match format(source) {
        Ok(out) => {
            let before = parsed.expect("formatted a script Rhai refuses");
            let after = engine.compile(&out).expect("the output parses");
            let (before, after) = (shape(&before), shape(&after));
            if before != after {
                // Rhai names a closure by a hash of its body with positions, and keys a
                // `switch`'s cases by the hash of their values: a closure as a case value (which
                // Rhai accepts) gets another key wherever it moves. Only then, compare without
                // the keys.
                assert!(
                    source.contains('|') && before.contains("CaseBlocksList"),
                    "the program changed:\n{before}\n{after}"
                );
                assert_eq!(
                    without_case_keys(&before),
                    without_case_keys(&after),
                    "the program changed"
                );
            }
            assert_eq!(
                format(&out).as_deref(),
                Ok(out.as_str()),
                "not a fixed point"
            );
            assert_eq!(
                comments_in(source).ok(),
                comments_in(&out).ok(),
                "a comment was lost or moved"
            );
        }
        Err(FormatError::Parse { .. }) => assert!(parsed.is_err(), "refused a script Rhai accepts"),
        Err(FormatError::Internal(why)) => {
            panic!("a script Rhai accepts was not formatted: {why}")
        }
    }
});
