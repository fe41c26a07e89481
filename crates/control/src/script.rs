//! The check a script passes before it is saved as a version: it compiles with the guest's
//! parser settings and defines `fn handle(req)`. Refusing at save keeps a broken version from
//! ever being deployed; the active one keeps serving.

pub use picloud_edge::ScriptError;
use picloud_shared::ScriptLimits;
use picloud_shared::nesting::{MAX_NESTING, check_nesting};
use rhai::{Engine, OptimizationLevel};

/// A script as sent, without a leading UTF-8 byte order mark: editors on Windows put one at
/// the start of a file, and Rhai would refuse it as an invisible `'\u{FEFF}'`. For
/// `#[serde(deserialize_with)]` on every `source` the API takes.
///
/// # Errors
///
/// What reading a string gives.
pub fn without_bom<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let mut source = <String as serde::Deserialize>::deserialize(d)?;
    if source.starts_with('\u{FEFF}') {
        source.drain(..'\u{FEFF}'.len_utf8());
    }
    Ok(source)
}

/// [`without_bom`] for an optional source.
///
/// # Errors
///
/// What reading an optional string gives.
pub fn optional_without_bom<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Source(#[serde(deserialize_with = "without_bom")] String);
    Ok(<Option<Source> as serde::Deserialize>::deserialize(d)?.map(|s| s.0))
}

/// Compiles `source` as the guest would and checks that it defines `fn handle(req)`.
///
/// # Errors
///
/// The first parse error with its position, or a missing handler.
pub fn check_script(source: &str) -> Result<(), ScriptError> {
    if !compile(source)?
        .iter_functions()
        .any(|f| f.name == "handle" && f.params.len() == 1)
    {
        return Err(ScriptError {
            message: "the script must define `fn handle(req)`".into(),
            line: None,
            column: None,
        });
    }
    Ok(())
}

/// Whether `source` defines `fn on_schedule(event)`, the entry point of schedule runs.
///
/// # Errors
///
/// The first parse error with its position.
pub fn defines_on_schedule(source: &str) -> Result<bool, ScriptError> {
    Ok(compile(source)?
        .iter_functions()
        .any(|f| f.name == "on_schedule" && f.params.len() == 1))
}

/// What every parser of a tenant's script checks first: no NUL character (PostgreSQL cannot
/// store one in text, and no script needs one: `"\0"` writes it in a string), and no nesting
/// deeper than [`MAX_NESTING`], which would make a parser recurse until its thread's stack
/// overflows (see [`picloud_shared::nesting`]). Linear, without recursion.
///
/// # Errors
///
/// The first NUL, or where the script nests too deeply, with its position.
pub fn check_text(source: &str) -> Result<(), ScriptError> {
    if let Some(at) = source.find('\0') {
        let before = &source[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        return Err(ScriptError {
            message: "the script contains a NUL character; write `\\x00` in a string instead"
                .into(),
            line: Some(line as u32),
            column: Some(column as u32),
        });
    }
    check_nesting(source, MAX_NESTING).map_err(|e| ScriptError {
        message: e.to_string(),
        line: Some(e.line),
        column: Some(e.column),
    })
}

fn compile(source: &str) -> Result<rhai::AST, ScriptError> {
    check_text(source)?;
    // A raw engine parses the same language; the guest's registered functions only matter at
    // run time. No optimisation: nothing of the script is evaluated here.
    let mut engine = Engine::new_raw();
    engine.set_optimization_level(OptimizationLevel::None);
    let limits = ScriptLimits::default();
    engine.set_max_expr_depths(
        limits.max_expr_depth as usize,
        limits.max_function_expr_depth as usize,
    );
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.compile(source).map_err(|e| {
        let pos = e.position();
        ScriptError {
            message: e.err_type().to_string(),
            line: pos.line().map(|l| l as u32),
            column: pos.position().map(|c| c as u32),
        }
    })
}

#[cfg(test)]
mod tests {

    /// A file saved with a byte order mark is the script without it: it checks and runs as if
    /// the mark were not there.
    #[test]
    fn a_leading_byte_order_mark_is_dropped() {
        #[derive(serde::Deserialize)]
        struct Sent {
            #[serde(deserialize_with = "without_bom")]
            source: String,
            #[serde(default, deserialize_with = "optional_without_bom")]
            maybe: Option<String>,
        }
        let sent: Sent =
            serde_json::from_str(r#"{"source": "\ufefffn handle(req) { 1 }", "maybe": "\ufeff1"}"#)
                .expect("parses");
        assert_eq!(sent.source, "fn handle(req) { 1 }");
        assert_eq!(sent.maybe.as_deref(), Some("1"));
        assert_eq!(check_script(&sent.source), Ok(()));
        let absent: Sent = serde_json::from_str(r#"{"source": "x\ufeff"}"#).expect("parses");
        assert_eq!((absent.source.as_str(), absent.maybe), ("x\u{feff}", None));
    }

    use super::*;

    #[test]
    fn good_script_passes() {
        assert_eq!(check_script("fn handle(req) { `hi ${req.path}` }"), Ok(()));
    }

    #[test]
    fn parse_error_has_its_position() {
        let err = check_script("fn handle(req) {\n  let x = ;\n}").expect_err("refused");
        assert_eq!((err.line, err.column), (Some(2), Some(11)), "{err:?}");
    }

    #[test]
    fn on_schedule_is_found_only_with_one_parameter() {
        let both = "fn handle(req) { 1 }\nfn on_schedule(event) { 2 }";
        assert_eq!(defines_on_schedule(both), Ok(true));
        assert_eq!(defines_on_schedule("fn handle(req) { 1 }"), Ok(false));
        assert_eq!(defines_on_schedule("fn on_schedule() { 1 }"), Ok(false));
        assert!(defines_on_schedule("fn on_schedule(e) {").is_err());
    }

    #[test]
    fn missing_handler_is_refused() {
        let err = check_script("fn other(a) { a }").expect_err("refused");
        assert!(err.message.contains("fn handle(req)"), "{err:?}");
    }

    #[test]
    fn nul_is_refused_with_its_position() {
        let err = check_script("fn handle(req) {\n  \"a\0b\"\n}").expect_err("refused");
        assert_eq!((err.line, err.column), (Some(2), Some(5)), "{err:?}");
        assert!(err.message.contains("NUL"), "{err:?}");
    }

    #[test]
    fn long_chains_are_refused_on_a_small_stack() {
        // Rhai's own depth catches most shapes; the scan catches them first and costs nothing
        // of the stack. On a 2 MiB thread, the size of tokio's blocking threads.
        let shapes = [
            format!("fn handle(r) {{ {} }}", vec!["1"; 20_000].join(" + ")),
            format!("fn handle(r) {{ r{} }}", ".a".repeat(20_000)),
            format!(
                "fn handle(r) {{ {}1{} }}",
                "(".repeat(2_000),
                ")".repeat(2_000)
            ),
        ];
        for source in shapes {
            let err = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || check_script(&source))
                .expect("thread")
                .join()
                .expect("no panic")
                .expect_err("refused");
            assert_eq!(err.line, Some(1), "{err:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let source = format!(
            "fn handle(req) {{ {}1{} }}",
            "(".repeat(5_000),
            ")".repeat(5_000)
        );
        assert!(check_script(&source).is_err());
    }
}
