//! The Rhai pretty-printer: `picloud fmt`, `POST /api/v1/format` and the dashboard's Format
//! button all call [`format`].
//!
//! It refuses before it formats: the script is parsed by Rhai first and the first parse error
//! is returned, with nothing emitted. The layout works on Rhai's tokens grouped by their
//! brackets (`layout.rs`), with comments as tokens, so that no comment can be dropped or moved
//! to another statement; it changes only whitespace, and adds a trailing comma where an array
//! or map breaks over lines. Two checks guard every result: the output parses to the same AST
//! as the input (positions ignored), and holds the same comments in the same order. A result
//! that fails either is refused as [`FormatError::Internal`], never returned.
//!
//! Layout: tab indentation, 100 columns with a tab counting 4, one space around binary
//! operators and after commas, unary operators tight, lists on one line when they fit and
//! else one item per line, long expressions broken after their loosest operators, long method
//! chains one call per line, blank lines between statements kept and collapsed to one, one
//! newline at the end.

mod doc;
mod layout;
mod lex;

use picloud_shared::ScriptLimits;
use picloud_shared::nesting::{MAX_NESTING, check_nesting};
use rhai::{Engine, OptimizationLevel};

pub use doc::{TAB, WIDTH};

/// Why a script was not formatted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The script does not parse: Rhai's first error, 1-based line and column.
    #[error("{message} (line {line}, column {column})")]
    Parse {
        message: String,
        line: u32,
        column: u32,
    },
    /// The formatter cannot lay this script out without risking its meaning or a comment.
    #[error("the formatter cannot format this script: {0}")]
    Internal(String),
}

/// The engine the formatter parses with: no optimisation (it would fold constants away), and
/// the guest's expression depths, so that it formats exactly the scripts that can run. Without
/// them a parenthesis nested 2,000 times, or a flat `1 + 1 + …` of 20,000 terms, recursed until
/// the thread's stack overflowed and took the whole server with it. Tests and benchmarks that
/// compare ASTs with [`shape`] parse with it too.
#[must_use]
pub fn engine() -> Engine {
    let mut engine = Engine::new_raw();
    engine.set_optimization_level(OptimizationLevel::None);
    let limits = ScriptLimits::default();
    engine.set_max_expr_depths(
        limits.max_expr_depth as usize,
        limits.max_function_expr_depth as usize,
    );
    engine
}

/// Formats `source`.
///
/// Its recursion is bounded: [`check_nesting`] refuses what would nest deeper than
/// [`MAX_NESTING`] before any parser runs, and Rhai's expression depths bind below that (see
/// [`engine`]); `tests/depth.rs` formats the deepest shapes on a 2 MiB thread, the size of
/// tokio's blocking threads.
///
/// # Errors
///
/// [`FormatError::Parse`] when Rhai refuses the script (or it nests too deeply);
/// [`FormatError::Internal`] when the result would not be the same program with the same
/// comments.
pub fn format(source: &str) -> Result<String, FormatError> {
    check_nesting(source, MAX_NESTING).map_err(|e| FormatError::Parse {
        message: e.to_string(),
        line: e.line,
        column: e.column,
    })?;
    let engine = engine();
    engine.compile(source).map_err(|e| {
        let pos = e.position();
        FormatError::Parse {
            message: e.err_type().to_string(),
            line: pos.line().unwrap_or(0) as u32,
            column: pos.position().unwrap_or(0) as u32,
        }
    })?;
    let internal = |e: lex::LexError| {
        FormatError::Internal(format!(
            "{} at line {}, column {}",
            e.message, e.line, e.column
        ))
    };
    let tokens = lex::tokens(source).map_err(internal)?;
    if tokens.is_empty() {
        return Ok(String::new());
    }
    let tree = layout::tree(&tokens).map_err(internal)?;
    let out = doc::print(&layout::program(&tree));
    // The guards. The output's tokens must be the input's, comments included, but for the
    // commas added where a list broke; Rhai must parse it. Since Rhai's parser sees only
    // tokens, that is the same program (the tests and the fuzz target also compare the two
    // ASTs, with [`shape`], which costs as much again as the rest of formatting).
    let out_tokens = lex::tokens(&out).map_err(internal)?;
    same_tokens(&tokens, &out_tokens)?;
    engine
        .compile(&out)
        .map_err(|e| FormatError::Internal(format!("the result does not parse: {e}")))?;
    Ok(out)
}

/// The AST's debug form with every source position taken out: its statements, then its
/// functions (named ones by name; closures, which Rhai names after a hash of their source,
/// numbered in the order they are first referred to).
pub fn shape(ast: &rhai::AST) -> String {
    use std::collections::{BTreeMap, HashMap, VecDeque};
    let mut closures = HashMap::new();
    let mut named = BTreeMap::new();
    for f in ast.iter_fn_def() {
        let text = format!(
            "{:?} fn {}({}) {:?}",
            f.access,
            f.name,
            f.params.join(", "),
            f.body
        );
        if f.name.starts_with("anon$") {
            closures.insert(f.name.to_string(), text);
        } else {
            named.insert(f.name.to_string(), text);
        }
    }
    let mut pending: VecDeque<String> = VecDeque::new();
    pending.push_back(format!("{:?}", ast.statements()));
    pending.extend(named.into_values());
    // Each closure's number, given where it is first referred to; one pass over each text.
    let mut numbers: HashMap<String, usize> = HashMap::new();
    let mut out = String::new();
    while let Some(text) = pending.pop_front() {
        let mut rest = text.as_str();
        while let Some(i) = rest.find("anon$") {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let end = tail[5..]
                .find(|c: char| !c.is_ascii_hexdigit())
                .map_or(tail.len(), |e| e + 5);
            let name = &tail[..end];
            let next = numbers.len();
            let n = *numbers.entry(name.to_string()).or_insert_with(|| {
                if let Some(def) = closures.remove(name) {
                    pending.push_back(def);
                }
                next
            });
            out.push_str("closure#");
            out.push_str(&n.to_string());
            rest = &tail[end..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    strip_positions(&out)
}

/// Removes source positions: every `line:column` outside string literals (with a ` @ ` before
/// it, or a `-` joining two of them into a span), and ` @ none`. Works on bytes: every marker
/// is ASCII, and everything else is copied as it is.
fn strip_positions(debug: &str) -> String {
    let debug = debug.replace(" @ none", "");
    let bytes = debug.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            out.push(c);
            if c == b'\\' {
                if let Some(&next) = bytes.get(i + 1) {
                    out.push(next);
                }
                i += 2;
                continue;
            }
            if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            out.push(c);
            i += 1;
            continue;
        }
        if let Some(end) = position_at(bytes, i) {
            // A span ends in another position, or in a bare column on the same line.
            let end = match bytes.get(end) {
                Some(b'-') => position_at(bytes, end + 1).unwrap_or_else(|| {
                    let mut j = end + 1;
                    while bytes.get(j).is_some_and(u8::is_ascii_digit) {
                        j += 1;
                    }
                    j
                }),
                _ => end,
            };
            if out.ends_with(b" @ ") {
                out.truncate(out.len() - 3);
            }
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    // Only whole ASCII bytes were removed, so the rest is still UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// If `line:column` starts at `i` (and is not part of a longer word), where it ends.
fn position_at(bytes: &[u8], i: usize) -> Option<usize> {
    if i > 0
        && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] >= 0x80)
    {
        return None;
    }
    let digits = |mut j: usize| {
        let start = j;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        (j > start).then_some(j)
    };
    let colon = digits(i)?;
    if bytes.get(colon) != Some(&b':') {
        return None;
    }
    digits(colon + 1)
}

/// Whether `output` is `input` with only commas added, each before a closing bracket or after
/// a `}` (a trailing comma, a comma after a `switch` arm's block), removed before a closing
/// bracket (a trailing comma on a list that stays on one line), or moved from after a comment
/// to before it (a comment ending a list item).
fn same_tokens(input: &[lex::Token<'_>], output: &[lex::Token<'_>]) -> Result<(), FormatError> {
    fn is_comment(t: &lex::Token<'_>) -> bool {
        matches!(t.kind, lex::Kind::LineComment | lex::Kind::BlockComment)
    }
    fn text<'s>(t: &lex::Token<'s>) -> &'s str {
        if is_comment(t) {
            t.text.trim_end()
        } else {
            t.text
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < input.len() || j < output.len() {
        match (input.get(i), output.get(j)) {
            (Some(a), Some(b)) if text(a) == text(b) => {
                i += 1;
                j += 1;
            }
            // A comment that ended an item before its comma now follows the comma.
            (Some(a), Some(b))
                if is_comment(a)
                    && b.kind == lex::Kind::Comma
                    && input.get(i + 1).is_some_and(|c| c.kind == lex::Kind::Comma)
                    && output.get(j + 1).is_some_and(|c| text(c) == text(a)) =>
            {
                i += 2;
                j += 2;
            }
            // A trailing comma the layout left out (`f(a,)`, `[1, 2,]` on one line).
            (Some(a), _)
                if a.kind == lex::Kind::Comma
                    && input
                        .get(i + 1)
                        .is_some_and(|n| matches!(n.kind, lex::Kind::Close(_))) =>
            {
                i += 1;
            }
            (_, Some(b))
                if b.kind == lex::Kind::Comma
                    && (output[j + 1..]
                        .iter()
                        .find(|n| !is_comment(n))
                        .is_some_and(|n| matches!(n.kind, lex::Kind::Close(_)))
                        || j > 0
                            && output[j - 1].kind == lex::Kind::Close(lex::Bracket::Brace)) =>
            {
                j += 1;
            }
            (a, b) => {
                let what = if a.is_some_and(is_comment) || b.is_some_and(is_comment) {
                    "a comment would be lost or moved"
                } else {
                    "the result would not be the same program"
                };
                let (line, column) = a.map_or((0, 0), |t| (t.line, t.column));
                return Err(FormatError::Internal(format!(
                    "{what} (line {line}, column {column})"
                )));
            }
        }
    }
    Ok(())
}

/// The comments of `source`, in order (each with its trailing whitespace trimmed): what the
/// formatter promises to keep.
///
/// # Errors
///
/// [`FormatError::Internal`] where the formatter's lexer does not know the script's tokens.
pub fn comments_in(source: &str) -> Result<Vec<String>, FormatError> {
    let tokens = lex::tokens(source).map_err(|e| FormatError::Internal(e.message))?;
    Ok(tokens
        .iter()
        .filter(|t| matches!(t.kind, lex::Kind::LineComment | lex::Kind::BlockComment))
        .map(|t| t.text.trim_end().to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(src: &str) -> String {
        let out = format(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
        assert_eq!(
            format(&out).as_deref(),
            Ok(out.as_str()),
            "idempotent: {out}"
        );
        out
    }

    fn guard(input: &str, output: &str) -> Result<(), FormatError> {
        let lex = |s| lex::tokens(s).expect("lexes");
        same_tokens(&lex(input), &lex(output))
    }

    #[test]
    fn the_guard_allows_whitespace_and_added_commas_only() {
        assert_eq!(guard("f(a,b)", "f(\n\ta,\n\tb\n)"), Ok(()));
        assert_eq!(guard("[a, b]", "[a, b,]"), Ok(()));
        assert_eq!(guard("f(a,)", "f(a)"), Ok(()));
        // Found by the fuzz target: the last item's comment after the added trailing comma.
        assert_eq!(guard("[1, 0 // c\n]", "[1, 0, // c\n]"), Ok(()));
        assert_eq!(guard("[a // c\n, b]", "[a, // c\nb]"), Ok(()));
        let refused = |r: Result<(), FormatError>, what: &str| {
            assert!(
                matches!(&r, Err(FormatError::Internal(m)) if m.contains(what)),
                "{r:?}"
            );
        };
        refused(guard("a // c\n", "a\n"), "comment");
        refused(guard("/* x */ a", "a /* x */"), "comment");
        refused(guard("|x| |y| x", "|x||y| x"), "same program");
        refused(guard("f(a, b)", "f(a,, b)"), "same program");
    }

    #[test]
    fn unary_signs_in_a_row_keep_their_space() {
        // Found by the fuzz target: `break --42` is Rhai's reserved `--`.
        assert_eq!(fmt("loop { break - - 42; }"), "loop { break - - 42; }\n");
        assert_eq!(fmt("loop { break - -42; }"), "loop { break - -42; }\n");
        assert_eq!(fmt("let x = - -1 + + +2;"), "let x = - -1 + + +2;\n");
        assert_eq!(fmt("let f = | |1;"), "let f = | | 1;\n");
        // Found by the fuzz target: `- 0.u` is a minus applied to `0.u`, `-0.u` reads `u` of -0.
        assert_eq!(
            fmt("let a = -  1.abs(); let b = -1.abs();"),
            "let a = - 1.abs();\nlet b = -1.abs();\n"
        );
    }

    #[test]
    fn comments_after_a_lists_last_item_stay_apart() {
        // Found by the fuzz target: the second joined the first's line, inside it.
        let src = "let z = [\n\t2, // two\n\t// after\n\t// and after\n];\n";
        assert_eq!(fmt(src), src);
    }

    #[test]
    fn numbers_end_where_rhai_ends_them() {
        // Found by the fuzz target: `10.0e-_053` is one number to Rhai.
        assert_eq!(
            fmt("let a=10.0e-_053;let b=1_0.5_e+1_0;let c=0x_FF;let d=1.max(2);let e=0..9;"),
            "let a = 10.0e-_053;\nlet b = 1_0.5_e+1_0;\nlet c = 0x_FF;\nlet d = 1.max(2);\nlet e = 0..9;\n"
        );
    }

    #[test]
    fn an_index_is_never_broken_like_an_array() {
        // Found by the fuzz target: `a?[\n\t0,\n]` does not parse.
        let long = "a".repeat(100);
        assert_eq!(
            fmt(&format!("let b={long}?[0]??0;")),
            format!("let b = {long}?[0] ??\n\t0;\n")
        );
        assert_eq!(
            fmt(&format!("let b={long}[1];")),
            format!("let b = {long}[1];\n")
        );
    }

    #[test]
    fn a_trailing_comma_goes_with_a_list_on_one_line() {
        // Found by the fuzz target: `print(x,)` was refused.
        assert_eq!(
            fmt("print(x,);let a=[1,2,];"),
            "print(x);\nlet a = [1, 2];\n"
        );
    }

    #[test]
    fn a_backslash_in_a_backtick_string_escapes_nothing() {
        // Found by the fuzz target: Rhai's backtick strings are verbatim.
        assert_eq!(
            fmt("let s=`a\\`;let t=`x``\\```;"),
            "let s = `a\\`;\nlet t = `x``\\```;\n"
        );
    }

    #[test]
    fn a_long_block_does_not_break_the_condition_before_it() {
        // Found by the fuzz target: the condition broke on the first pass and not the second.
        let long = "x".repeat(120);
        let out = fmt(&format!("if x < 0 {{ throw \"{long}\"; }}"));
        assert_eq!(out, format!("if x < 0 {{\n\tthrow \"{long}\";\n}}\n"));
    }

    #[test]
    fn operators_commas_and_unary() {
        assert_eq!(
            fmt("let x=a+b*c;let y = - x;"),
            "let x = a + b * c;\nlet y = -x;\n"
        );
        assert_eq!(fmt("f(a ,b,c)"), "f(a, b, c)\n");
        assert_eq!(
            fmt("let z = !done && x>=-1;"),
            "let z = !done && x >= -1;\n"
        );
    }

    #[test]
    fn blocks_indent_with_tabs_and_blank_lines_collapse() {
        assert_eq!(
            fmt("fn handle(req){\nlet a=1;\n\n\n\nif a>0 {a} else {0}\n}"),
            "fn handle(req) {\n\tlet a = 1;\n\n\tif a > 0 { a } else { 0 }\n}\n"
        );
    }

    #[test]
    fn a_parse_error_emits_nothing_and_says_where() {
        match format("fn handle(req) {\n  let x = ;\n}") {
            Err(FormatError::Parse { line, column, .. }) => assert_eq!((line, column), (2, 11)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_lists_break_one_item_per_line() {
        let long = format!(
            "let a = [{}];",
            (0..30)
                .map(|i| format!("item{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let out = fmt(&long);
        assert!(out.starts_with("let a = [\n\titem0,\n\titem1,\n"), "{out}");
        assert!(out.ends_with("\titem29,\n];\n"), "{out}");
    }

    #[test]
    fn comments_stay_where_they_are() {
        let src = "// head\nlet a = 1; // after a\n/* block */\nlet b = [\n\t1, // one\n\t2,\n];\n";
        assert_eq!(fmt(src), src);
    }

    #[test]
    fn maps_closures_chains_and_strings() {
        assert_eq!(
            fmt(
                "let m=#{a:1,\"b c\":[1,2]};let f=|x,y|x+y;let s=`hi ${ m.a }`;x?.y??z;a?[0];r.map(|v|v*2).filter(|v|v>1)"
            ),
            "let m = #{ a: 1, \"b c\": [1, 2] };\nlet f = |x, y| x + y;\nlet s = `hi ${ m.a }`;\nx?.y ?? z;\na?[0];\nr.map(|v| v * 2).filter(|v| v > 1)\n"
        );
    }
}
