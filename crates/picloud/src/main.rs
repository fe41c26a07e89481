//! `picloud`: the all-in-one binary. Thin: argument parsing here, the work in the core crates.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Must run before anything starts a thread: this process may be the executor's zygote.
    picloud_executor_core::run_zygote_if_requested();
    picloud::cli::main()
}
