//! The zygote: PiCloud's own binary, re-executed with [`ZYGOTE_ARG`] before any thread exists.
//! It loads the engine and the compiled guest once, enters the process-wide sandbox layers, and
//! then forks workers on request, handing each worker's channel and pidfd to the server over
//! its control socket (fd 3). A bare `fork` of the multi-threaded server would copy locks held
//! by other threads; the zygote has no other threads.

use std::ffi::OsStr;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::unistd::{ForkResult, fork};
use picloud_shared::{InvocationRequest, Limits};
use seccompiler::BpfProgram;
use wasmtime::{Engine, InstancePre, Module};

use super::wire::{self, ZygoteHello, ZygoteReady};
use super::worker;
use crate::host::{self, HostState};
use crate::{ExecutorConfig, Isolation, engine};

/// The first argument that turns PiCloud's binary into a zygote.
pub const ZYGOTE_ARG: &str = "__picloud-zygote";
/// What a worker may allocate beyond the zygote's memory and its instance's (the request and
/// answer, logs, host-call buffers).
const DATA_HEADROOM: u64 = 128 << 20;
/// The descriptor the zygote's control socket arrives on.
pub(crate) const CONTROL_FD: RawFd = 3;

/// Becomes the zygote and never returns if this process was started as one; otherwise does
/// nothing. Call it first thing in `main`, before anything starts a thread (a tokio runtime,
/// a tracing writer, …).
pub fn run_zygote_if_requested() {
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(ZYGOTE_ARG)) {
        // SAFETY: the server passes the control socket as fd 3 and nothing else owns it.
        let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
        let code = match run(control) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("picloud zygote: {e}");
                1
            }
        };
        std::process::exit(code);
    }
}

/// What every worker inherits from the zygote.
pub(crate) struct ZygoteCtx {
    pub engine: Engine,
    pub pre: InstancePre<HostState>,
    pub module_fd: Option<RawFd>,
    pub filter: BpfProgram,
    pub max_memory_bytes: u64,
    pub cpu_seconds: u64,
    /// `RLIMIT_DATA` of each worker: what the zygote holds, the largest instance memory, and
    /// [`DATA_HEADROOM`] for the runtime's own allocations.
    pub data_limit: Option<u64>,
    pub max_invocations: u32,
    pub diagnostics: bool,
}

fn run(mut control: UnixStream) -> Result<(), String> {
    let hello = wire::read_frame(&mut control, 1 << 20)
        .map_err(|e| format!("reading the hello: {e}"))?
        .ok_or("the server closed the control socket")?;
    let hello: ZygoteHello =
        serde_json::from_slice(&hello).map_err(|e| format!("bad hello: {e}"))?;
    match prepare(&hello) {
        Ok((ctx, ready)) => {
            let ready = serde_json::to_vec(&ready).map_err(|e| e.to_string())?;
            wire::write_frame(&mut control, &ready).map_err(|e| e.to_string())?;
            serve(control, &ctx)
        }
        Err(error) => {
            let failed = serde_json::to_vec(&ZygoteReady::Failed {
                error: error.clone(),
            })
            .map_err(|e| e.to_string())?;
            let _ = wire::write_frame(&mut control, &failed);
            Err(error)
        }
    }
}

fn prepare(hello: &ZygoteHello) -> Result<(ZygoteCtx, ZygoteReady), String> {
    let mut config = ExecutorConfig::new(Isolation::Process, "");
    config.max_memory_bytes = hello.max_memory_bytes;
    config.consume_fuel = hello.consume_fuel;
    let engine = engine::engine(&config, Isolation::Process).map_err(|e| e.to_string())?;
    // SAFETY: the server just wrote or verified this file in its module cache.
    let module = unsafe { Module::deserialize_file(&engine, &hello.module_path) }
        .map_err(|e| format!("loading {}: {e}", hello.module_path.display()))?;
    let linker = host::linker(&engine, &module).map_err(|e| e.to_string())?;
    let pre = linker.instantiate_pre(&module).map_err(|e| e.to_string())?;
    let module_fd = find_fd_of(&hello.module_path);
    let filter = super::sandbox::seccomp_program()?;

    warm_up(&engine, &pre)?;
    let sandbox = super::sandbox::isolate_zygote();
    // Workers are reaped by the kernel; the server learns of their end from their channel.
    // SAFETY: installing SIG_IGN runs no code in a signal context.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) }.map_err(|e| e.to_string())?;
    // After any change of credentials, which clears it: die with the server's spawner thread.
    // SAFETY: a plain prctl on this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let threads = thread_count();
    if threads != Some(1) {
        return Err(format!(
            "the zygote must be single-threaded to fork, but has {threads:?} threads"
        ));
    }
    let ctx = ZygoteCtx {
        engine,
        pre,
        module_fd,
        filter,
        max_memory_bytes: hello.max_memory_bytes,
        cpu_seconds: hello.worker_cpu_seconds,
        data_limit: super::sandbox::data_size()
            .map(|base| base + hello.max_memory_bytes + DATA_HEADROOM),
        max_invocations: hello.max_invocations_per_worker.max(1),
        diagnostics: hello.diagnostics,
    };
    Ok((ctx, ZygoteReady::Ready { sandbox }))
}

/// One invocation in the zygote itself: proves the module works before anything is promised,
/// and leaves wasmtime's per-thread state set up for every forked worker to inherit.
fn warm_up(engine: &Engine, pre: &InstancePre<HostState>) -> Result<(), String> {
    let limits = Limits::default();
    let input = crate::guest_input(
        "fn handle(req) { `warm ${req.path}` }",
        &InvocationRequest::get("/"),
        &limits,
        None,
        None,
    );
    let mut store = host::new_store(engine, limits.memory_bytes, limits.max_log_bytes);
    let result = host::arm_store(&mut store, &limits)
        .and_then(|()| pre.instantiate(&mut store))
        .and_then(|instance| host::run(&mut store, &instance, &input));
    let result = host::finish(&mut store, result, &limits, std::time::Instant::now());
    if result.outcome.is_ok() {
        Ok(())
    } else {
        Err(format!(
            "the guest failed its warm-up: {}",
            result.outcome.describe()
        ))
    }
}

fn serve(mut control: UnixStream, ctx: &ZygoteCtx) -> Result<(), String> {
    loop {
        let Some(cmd) = wire::read_frame(&mut control, 64).map_err(|e| e.to_string())? else {
            return Ok(()); // the server is gone
        };
        let count = cmd
            .get(..4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        for _ in 0..count {
            spawn_worker(&control, ctx)?;
        }
    }
}

fn spawn_worker(control: &UnixStream, ctx: &ZygoteCtx) -> Result<(), String> {
    let (server_end, worker_end) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: the zygote is single-threaded (checked in `prepare`), so the child may run
    // arbitrary code.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(server_end);
            worker::main(worker_end, ctx)
        }
        ForkResult::Parent { child } => {
            drop(worker_end);
            // SAFETY: pidfd_open on our own child; the result is checked.
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) } as RawFd;
            if pidfd < 0 {
                return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
            }
            let pid = child.as_raw().to_le_bytes();
            let fds = [server_end.as_raw_fd(), pidfd];
            let sent = sendmsg::<()>(
                control.as_raw_fd(),
                &[IoSlice::new(&pid)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            );
            // SAFETY: pidfd is ours and no longer needed here.
            unsafe { libc::close(pidfd) };
            sent.map(|_| ())
                .map_err(|e| format!("sending a worker: {e}"))
        }
    }
}

fn find_fd_of(path: &Path) -> Option<RawFd> {
    let path = std::fs::canonicalize(path).ok()?;
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let target = std::fs::read_link(entry.path()).ok()?;
            (target == path).then(|| entry.file_name().to_str()?.parse().ok())?
        })
}

fn thread_count() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}
