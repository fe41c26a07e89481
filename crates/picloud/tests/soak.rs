//! The soak's short version (issue 9): `picloud-soak` (benches/src/soak.rs) for 45 s on the
//! debug build, with every check of the ten-minute run (`scripts/soak`): only the outcomes each
//! tenant should get, records equal to the answers, nothing dropped, no growth of descriptors,
//! threads or memory, no zombie, no panic.

mod common;

use std::process::Command;

#[test]
fn hostile_and_normal_tenants_together_for_45_seconds() {
    let soak = common::workspace_bin("picloud-soak");
    let out = Command::new(&soak)
        .args(["--seconds", "45"])
        .output()
        .expect("running picloud-soak");
    let report = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the soak failed:\n{log}\n{report}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("the soak's JSON report");
    assert_eq!(report["failures"], serde_json::json!([]));
    assert!(
        report["invocations"].as_u64().unwrap_or(0) > 500,
        "the soak ran too little: {report}"
    );
    eprintln!(
        "soak: {} invocations, {} records; quiet p99 alone {} ms, in the mix {} ms",
        report["invocations"],
        report["records"],
        report["quiet_solo"]["p99_ms"],
        report["quiet_mixed"]["p99_ms"]
    );
}
