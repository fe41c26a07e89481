//! The README's Quick Start, followed on a fresh clone: `scripts/run` starts the server,
//! `scripts/run tenant create` and `scripts/run fn deploy` deploy hello world with the CLI, and a
//! real HTTP client calls its endpoint. The clone is of the committed tree (HEAD), as a new
//! user would get it; it builds into this build's target directory so that only the
//! workspace's own crates are compiled again.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: [&str; 5] = [
    "scripts/run     # run PiCloud",
    "export PICLOUD_TOKEN=pc_...",
    "scripts/run tenant create demo",
    "scripts/run fn deploy hello examples/hello.rhai --tenant demo",
    "curl 'http://127.0.0.1:8080/fn/demo/hello?name=pi'",
];

struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test started.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The target directory this test was built in (`CARGO_TARGET_TMPDIR` is `<target>/tmp`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

fn scripts_run(clone: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(clone.join("scripts/run"));
    cmd.args(args)
        .current_dir(clone)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("PICLOUD_ADMIN_TOKEN")
        .env_remove("PICLOUD_DATABASE_URL")
        .env_remove("PICLOUD_DATA_DIR")
        .env_remove("PICLOUD_CACHE_DIR")
        .env_remove("PICLOUD_TENANT")
        .env_remove("PICLOUD_TOKEN");
    cmd
}

#[test]
fn readme_quick_start_on_a_fresh_clone() {
    let clone = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&clone);
    let status = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(repo_root())
        .arg(&clone)
        .status()
        .expect("git runs");
    assert!(status.success(), "git clone failed");

    // The steps this test takes are the README's, word for word.
    let readme = std::fs::read_to_string(clone.join("README.md")).expect("README.md");
    for step in STEPS {
        assert!(
            readme.contains(step),
            "the README's Quick Start no longer says `{step}`"
        );
    }

    // 1. `scripts/run`: builds and serves. A free port instead of 8080 (PICLOUD_LISTEN).
    let mut server = scripts_run(&clone, &[]);
    server
        .env("PICLOUD_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .process_group(0);
    let mut server = Group(server.spawn().expect("scripts/run starts"));
    let mut lines = BufReader::new(server.0.stdout.take().expect("stdout")).lines();
    let deadline = Instant::now() + Duration::from_secs(30 * 60);
    let mut token = None;
    let addr = loop {
        assert!(
            Instant::now() < deadline,
            "the server did not start in time"
        );
        let line = lines
            .next()
            .expect("the server printed its address before exiting")
            .expect("utf-8");
        if let Some(t) = line.split_whitespace().find(|w| w.starts_with("pc_")) {
            token = Some(t.to_string());
        }
        if let Some(addr) = line.strip_prefix("PiCloud listening on http://") {
            break addr.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let token = token.expect("the first start printed an admin token");
    let server_url = format!("http://{addr}");
    // The dashboard, built by `scripts/run`, on the same origin.
    let shell = ureq::get(&format!("{server_url}/"))
        .call()
        .expect("the dashboard answers")
        .into_body()
        .read_to_string()
        .expect("the shell is text");
    assert!(shell.contains("/_app/immutable/entry/"), "{shell}");

    // 2.-3. The CLI, with the printed token.
    for args in [
        &["tenant", "create", "demo"][..],
        &[
            "fn",
            "deploy",
            "hello",
            "examples/hello.rhai",
            "--tenant",
            "demo",
        ][..],
    ] {
        let out = scripts_run(&clone, args)
            .env("PICLOUD_TOKEN", &token)
            .env("PICLOUD_SERVER", &server_url)
            .output()
            .expect("scripts/run runs");
        assert!(
            out.status.success(),
            "scripts/run {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if args[0] == "fn" {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("deployed hello version 1"), "{stdout}");
        }
    }

    // 4. A real HTTP client calls the endpoint.
    let mut response = ureq::get(&format!("{server_url}/fn/demo/hello?name=pi"))
        .call()
        .expect("the endpoint answers");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.body_mut().read_to_string().expect("body"),
        "hello pi"
    );

    // SIGTERM stops it cleanly.
    // SAFETY: kill(2) on the server this test started (cargo run execs it).
    assert_eq!(
        unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&clone);
}
