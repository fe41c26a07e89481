//! Builds the Rhai guest (`../../guest`) for `wasm32-wasip1` so that a plain `cargo build` of a
//! fresh clone produces everything. Pattern: wasmtime's `crates/test-programs/artifacts/build.rs`.
//!
//! `PICLOUD_GUEST_WASM=/path/to/picloud_guest.wasm` skips the build and embeds that file.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const TARGET: &str = "wasm32-wasip1";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-env-changed=PICLOUD_GUEST_WASM");

    let wasm = match env::var_os("PICLOUD_GUEST_WASM") {
        Some(prebuilt) => PathBuf::from(prebuilt),
        None => {
            let built = build_guest(&manifest_dir.join("../../guest"), &out_dir);
            optimize(&built, &out_dir)
        }
    };
    let dest = out_dir.join("picloud_guest.wasm");
    let bytes = std::fs::read(&wasm)
        .unwrap_or_else(|e| panic!("cannot read the guest at {}: {e}", wasm.display()));
    std::fs::write(&dest, &bytes).expect("cannot write the guest into OUT_DIR");
    let digest = hex::encode(Sha256::digest(&bytes));
    println!("cargo:rustc-env=PICLOUD_GUEST_SHA256={digest}");
}

fn build_guest(guest_dir: &Path, out_dir: &Path) -> PathBuf {
    for watched in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "../crates/shared/src",
        "../crates/shared/Cargo.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            guest_dir.join(watched).display()
        );
    }
    let rustc = PathBuf::from(env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
    if let Some(message) = missing_target_message(&rustc) {
        panic!("{message}");
    }

    // A nested cargo on the outer target directory would wait forever on its lock, so the guest
    // gets a target directory of its own. It sits beside the outer profiles (not under OUT_DIR)
    // so that debug and release builds of the host share one guest build.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|target| target.join("picloud-guest"))
        .unwrap_or_else(|| out_dir.join("picloud-guest"));

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(guest_dir)
        .args(["build", "--release", "--target", TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        // 1 MiB of wasm stack, placed first so that an overflow traps instead of corrupting data.
        .env(
            "RUSTFLAGS",
            "-C link-arg=-zstack-size=1048576 -C link-arg=--stack-first",
        )
        .status()
        .expect("failed to run cargo for the guest");
    assert!(
        status.success(),
        "building the guest (guest/) for {TARGET} failed"
    );
    target_dir
        .join(TARGET)
        .join("release")
        .join("picloud_guest.wasm")
}

/// Runs binaryen's `wasm-opt -O3` over the guest when it is installed (`scripts/setup` installs
/// it): 7–13 % faster Rhai in the guest on our compute benchmarks. Without it the guest still
/// works, only slower, and the build says so.
fn optimize(wasm: &Path, out_dir: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=PICLOUD_WASM_OPT");
    let wasm_opt = env::var_os("PICLOUD_WASM_OPT").unwrap_or_else(|| "wasm-opt".into());
    let optimized = out_dir.join("picloud_guest.opt.wasm");
    let status = Command::new(&wasm_opt)
        .arg("-O3")
        // The features rustc enables for wasm32-wasip1; wasm-opt must not lower them.
        .args([
            "--enable-bulk-memory",
            "--enable-sign-ext",
            "--enable-mutable-globals",
            "--enable-nontrapping-float-to-int",
            "--enable-multivalue",
            "--enable-reference-types",
        ])
        .arg(wasm)
        .arg("-o")
        .arg(&optimized)
        .status();
    match status {
        Ok(s) if s.success() => optimized,
        Ok(s) => panic!("wasm-opt failed on the guest ({s})"),
        Err(_) => {
            println!(
                "cargo:warning=wasm-opt (binaryen) not found: the guest is built unoptimised and \
                 runs about 10% slower; `scripts/setup` installs it"
            );
            wasm.to_path_buf()
        }
    }
}

/// `Some(message)` when `rustc` has no standard library for the wasm target.
pub(crate) fn missing_target_message(rustc: &Path) -> Option<String> {
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = libdir.is_some_and(|dir| {
        std::fs::read_dir(dir).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd")))
        })
    });
    (!installed).then(|| {
        format!(
            "\n\nThe Rust target {TARGET} is not installed, and PiCloud's guest is built for it.\n\
             Run `rustup target add {TARGET}` (or `scripts/setup`), then build again.\n\
             (On machines with RUSTUP_AUTO_INSTALL=0, rust-toolchain.toml does not fetch it.)\n"
        )
    })
}
