//! The build script's check for the wasm target, run against a real and a stand-in `rustc`.

#[allow(dead_code)]
#[path = "../build.rs"]
mod build_script;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

#[test]
fn a_missing_wasm_target_says_how_to_add_it() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fake-rustc");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fake = dir.join("rustc");
    // A toolchain without the target: its libdir for wasm32-wasip1 does not exist.
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho {}/no-such-libdir\n", dir.display()),
    )
    .expect("write");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let message =
        build_script::missing_target_message(&fake).expect("the target is reported missing");
    assert!(
        message.contains("wasm32-wasip1 is not installed"),
        "{message}"
    );
    assert!(
        message.contains("rustup target add wasm32-wasip1"),
        "{message}"
    );
}

#[test]
fn the_installed_wasm_target_passes() {
    // The machine running the tests built the guest, so its rustc has the target.
    let rustc = std::env::var_os("RUSTC").map_or_else(|| PathBuf::from("rustc"), PathBuf::from);
    assert_eq!(build_script::missing_target_message(&rustc), None);
}
