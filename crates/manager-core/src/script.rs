//! The check a script passes before it is saved as a version: it compiles with the guest's
//! parser settings and defines `fn handle(req)`. Refusing at save keeps a broken version from
//! ever being deployed; the active one keeps serving.

use picloud_shared::ScriptLimits;
use rhai::{Engine, OptimizationLevel};
use serde::Serialize;
use utoipa::ToSchema;

/// A script the platform refuses, with where (1-based line and column) when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, thiserror::Error)]
#[error("{message}")]
pub struct ScriptError {
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

/// Compiles `source` as the guest would and checks that it defines `fn handle(req)`.
///
/// # Errors
///
/// The first parse error with its position, or a missing handler.
pub fn check_script(source: &str) -> Result<(), ScriptError> {
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
    let ast = engine.compile(source).map_err(|e| {
        let pos = e.position();
        ScriptError {
            message: e.err_type().to_string(),
            line: pos.line().map(|l| l as u32),
            column: pos.position().map(|c| c as u32),
        }
    })?;
    if !ast
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

#[cfg(test)]
mod tests {
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
    fn missing_handler_is_refused() {
        let err = check_script("fn other(a) { a }").expect_err("refused");
        assert!(err.message.contains("fn handle(req)"), "{err:?}");
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
