//! What every PiCloud server process does at start and stop (`picloud serve`,
//! `picloud-orchestrator`, `picloud-manager`, `picloud-executor`): a tuned allocator, logging
//! to standard error, files its owner's alone, a multi-threaded runtime, and SIGTERM heard as
//! a graceful stop. Its own crate so that the executor's binary gets it without the node's
//! HTTP server and database.

use std::io;

/// Sets up a server process before its runtime starts: [`tune_allocator`], then logging to
/// standard error, filtered by `PICLOUD_LOG` (default `warn`).
pub fn init_process() {
    tune_allocator();
    init_tracing();
}

/// Makes every file and folder this process creates from now on its owner's alone (a umask of
/// `077`): the database and its journal, the record spool, the module cache. Servers call it
/// first; the command line's other commands (which write a user's own files) do not.
pub fn private_files() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Creates `dir` if needed and makes it its owner's alone (`0700`), also when an older version
/// made it readable by others.
///
/// # Errors
///
/// When it cannot be created or its mode set.
pub fn private_dir(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Makes glibc's allocator give large freed blocks back to the kernel. By default it raises
/// its mmap threshold to the largest block freed so far (up to 32 MiB) and its trim threshold
/// to twice that, so after the first few large bodies (a tenant's 2 MiB response, a worker's
/// frame) every arena keeps megabytes of freed heap for good. The soak measured the server's
/// heap at rest at 35 MiB by default against 8 MiB with the threshold fixed at 128 KiB, glibc's
/// starting value (docs/performance.md). A fixed threshold turns the adjustment off: blocks of
/// 128 KiB and more are mapped and unmapped each time, which the hot path (small requests)
/// never allocates. Elsewhere than glibc, nothing to do.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; it is called before the runtime
    // starts any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn init_tracing() {
    use std::io::IsTerminal;
    // Colours only for a person at a terminal: in a file or journald their escape codes are
    // noise (`NO_COLOR` turns them off there too).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PICLOUD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs `main` on a multi-threaded runtime; an error is printed (`{:#}`: with its causes, for
/// an `anyhow` error) and the process exits 1.
pub fn run_main<F, E>(main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    init_process();
    private_files();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
///
/// The handler is installed when this is called, not when the future is first polled: a
/// server calls it before it says it listens, so that a SIGTERM right after that line stops
/// it gracefully instead of killing it.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        let term = async {
            match term {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = term => {},
        }
    }
}
