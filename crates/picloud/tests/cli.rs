//! `picloud invoke`, the first user-facing command, run as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn picloud(args: &[&str]) -> Output {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("module-cache");
    Command::new(env!("CARGO_BIN_EXE_picloud"))
        .args(args)
        .env("PICLOUD_CACHE_DIR", cache)
        .output()
        .expect("picloud runs")
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn invoke_prints_response_outcome_and_costs() {
    for isolation in ["process", "instance"] {
        let out = picloud(&[
            "invoke",
            &example("hello.rhai"),
            "--isolation",
            isolation,
            "--request",
            r#"{"query":{"name":"pi"}}"#,
        ]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{isolation}: {stdout}{}",
            text(&out.stderr)
        );
        assert!(stdout.contains("HTTP 200"), "{stdout}");
        assert!(stdout.contains("hello pi"), "{stdout}");
        assert!(stdout.contains("outcome: ok"), "{stdout}");
        assert!(stdout.contains("fuel: "), "{stdout}");
        assert!(stdout.contains("peak memory: "), "{stdout}");
        assert!(stdout.contains("[info] greeting pi"), "{stdout}");
    }
}

#[test]
fn invoke_json_output_and_limits_flags() {
    let dir = tempdir();
    let script = dir.join("spin.rhai");
    std::fs::write(&script, "fn handle(req) { loop {} }").expect("write");
    let out = picloud(&[
        "invoke",
        script.to_str().expect("utf-8 path"),
        "--json",
        "--fuel",
        "1000000",
    ]);
    assert_eq!(out.status.code(), Some(1), "a failed outcome exits 1");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(result["outcome"]["kind"], "fuel_exhausted");
    assert!(result["fuel_used"].as_u64().expect("fuel") >= 1_000_000);

    let out = picloud(&[
        "invoke",
        &example("json.rhai"),
        "--json",
        "--request",
        r#"{"method":"POST","body":"{\"a\":1,\"b\":2}"}"#,
        "--memory-mb",
        "16",
        "--timeout-ms",
        "2000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let body: serde_json::Value =
        serde_json::from_str(result["response"]["body"].as_str().expect("body"))
            .expect("JSON body");
    assert_eq!(body["keys"], 2);
    assert_eq!(body["method"], "POST");
}

#[test]
fn invoke_explains_bad_input() {
    let out = picloud(&["invoke", "/nonexistent/x.rhai"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot read /nonexistent/x.rhai"),
        "{}",
        text(&out.stderr)
    );

    let out = picloud(&["invoke", &example("hello.rhai"), "--request", "{not json"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--request is not valid JSON"),
        "{}",
        text(&out.stderr)
    );

    let out = picloud(&["invoke", &example("hello.rhai"), "--isolation", "vm"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown isolation mode 'vm'"),
        "{}",
        text(&out.stderr)
    );
}

fn tempdir() -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
