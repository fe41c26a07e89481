//! Deep and long scripts are refused with a position, never formatted until the stack runs out:
//! each shape runs on a thread with a 2 MiB stack, the size of tokio's blocking threads (where
//! `POST /api/v1/format` formats), and a stack overflow there would abort this test binary.

use picloud_rhai_fmt::{FormatError, format};

/// Shapes that nest one level per repetition, each far past any depth a parser allows.
fn deep_shapes() -> Vec<(&'static str, String)> {
    vec![
        (
            "parentheses",
            format!(
                "fn handle(r){{ {}1{} }}",
                "(".repeat(2_000),
                ")".repeat(2_000)
            ),
        ),
        (
            "a flat sum",
            format!("fn handle(r){{ {} }}", vec!["1"; 20_000].join(" + ")),
        ),
        (
            "a flat sum at top level",
            format!("let x = {};", vec!["1"; 20_000].join(" + ")),
        ),
        (
            "a property chain",
            format!("let x = r{};", ".a".repeat(20_000)),
        ),
        (
            "a method chain",
            format!("let x = r{};", ".f()".repeat(20_000)),
        ),
        (
            "an index chain",
            format!("let y = x{};", "[0]".repeat(20_000)),
        ),
        (
            "negations",
            format!("fn handle(r){{ {}x }}", "!".repeat(20_000)),
        ),
        (
            "minus signs",
            format!("fn handle(r){{ {}x }}", "- ".repeat(20_000)),
        ),
        (
            "else-if",
            format!("fn handle(r){{ {}1 }}", "if a {} else ".repeat(5_000)),
        ),
        (
            "arrays",
            format!("let x = {}1{};", "[".repeat(2_000), "]".repeat(2_000)),
        ),
        (
            "maps",
            format!("let x = {}1{};", "#{a:".repeat(2_000), "}".repeat(2_000)),
        ),
        (
            "interpolations",
            format!("let x = {}1{};", "`${".repeat(2_000), "}`".repeat(2_000)),
        ),
        ("closures", format!("let x = {}1;", "|| ".repeat(5_000))),
        (
            "blocks",
            format!("let x = {}1{};", "{".repeat(2_000), "}".repeat(2_000)),
        ),
        (
            "ranges",
            format!("let x = {};", vec!["1"; 20_000].join("..")),
        ),
    ]
}

fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("a thread")
        .join()
        .expect("no panic")
}

#[test]
fn deep_scripts_are_refused_with_a_position() {
    for (name, source) in deep_shapes() {
        let result = on_small_stack(move || format(&source));
        match result {
            Err(FormatError::Parse { line, column, .. }) => {
                assert_eq!(line, 1, "{name}");
                assert!(column > 1, "{name}: column {column}");
            }
            other => panic!("{name}: expected a parse error, got {other:?}"),
        }
    }
}

/// The same shapes as files: `scripts/fuzz` seeds the `format` target with this directory.
#[test]
fn the_deep_seed_scripts_are_refused() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deep");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/deep") {
        let path = entry.expect("an entry").path();
        let source = std::fs::read_to_string(&path).expect("a script");
        let result = on_small_stack(move || format(&source));
        assert!(
            matches!(result, Err(FormatError::Parse { line: 1, .. })),
            "{}: {result:?}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 4, "the deep seeds are there");
}

#[test]
fn what_the_guest_runs_still_formats() {
    // 25 levels of parentheses at top level (Rhai counts about two levels for each), a sum of
    // 20 terms in a function (one level per operator: the guest's limits are 64 at top level
    // and 32 in functions), and a list of 5,000 statements: all within the limits, all
    // formatted.
    let parens = format!("let x = {}1{};\n", "(".repeat(25), ")".repeat(25));
    let sum = format!("fn f() {{\n\t{}\n}}\n", vec!["1"; 20].join(" + "));
    let many = "let x = 1;\n".repeat(5_000);
    for source in [parens, sum, many] {
        let result = on_small_stack(move || format(&source));
        assert!(result.is_ok(), "{result:?}");
    }
}
