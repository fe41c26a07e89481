//! Arbitrary input through the formatter: it never panics, refuses only what Rhai refuses, and
//! what it returns keeps the three properties (a fixed point, the same program, every comment).
#![no_main]

use libfuzzer_sys::fuzz_target;
use picloud_rhai_fmt::{FormatError, comments_in, format, shape};

fn engine() -> rhai::Engine {
    let mut engine = rhai::Engine::new_raw();
    engine.set_optimization_level(rhai::OptimizationLevel::None);
    engine.set_max_expr_depths(0, 0);
    engine
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
            assert_eq!(shape(&before), shape(&after), "the program changed");
            assert_eq!(format(&out).as_deref(), Ok(out.as_str()), "not a fixed point");
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
