//! A worker: a child of the zygote that sandboxes itself, pre-instantiates the guest, serves
//! exactly one invocation and exits.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use picloud_shared::host::{HostReply, MAX_REPLY_BYTES};

use picloud_shared::{InvocationResult, Limits, Outcome};
use wasmtime::Store;

use super::sandbox;
use super::wire::{self, WorkerRequest};
use super::zygote::ZygoteCtx;
use crate::DiagnosticReport;
use crate::host::{self, HostLink, HostState};

/// Largest guest input accepted on the channel: script and request with headroom.
const MAX_INPUT: usize = 64 << 20;

pub(crate) fn main(channel: UnixStream, ctx: &ZygoteCtx) -> ! {
    let channel = Arc::new(channel);
    let code = match serve(&channel, ctx) {
        Ok(()) => 0,
        Err(message) => {
            // The server reads this as the invocation's answer.
            let result = InvocationResult::failed(
                Outcome::Internal {
                    message: format!("worker: {message}"),
                },
                std::time::Duration::ZERO,
            );
            if let Ok(bytes) = serde_json::to_vec(&result) {
                let _ = wire::write_frame(&mut &*channel, &bytes);
            }
            1
        }
    };
    // SAFETY: ends this process without running the zygote's atexit handlers or destructors,
    // which belong to the zygote.
    unsafe { libc::_exit(code) }
}

/// Host calls go to the server over the worker's channel, tagged so that the server tells
/// them from the answer; the guest waits for the reply.
struct ChannelLink(Arc<UnixStream>);

impl HostLink for ChannelLink {
    fn call(&mut self, call: &[u8]) -> Vec<u8> {
        let mut channel = &*self.0;
        let sent = channel.write_all(&wire::frame(&[&[&[wire::CALL_TAG][..], call].concat()]));
        let reply = sent.and_then(|()| wire::read_frame(&mut channel, MAX_REPLY_BYTES));
        match reply {
            Ok(Some(reply)) => reply,
            Ok(None) => host::encode_reply(&HostReply::error("the server closed the channel")),
            Err(e) => host::encode_reply(&HostReply::error(format!("the channel failed: {e}"))),
        }
    }
}

fn serve(channel: &Arc<UnixStream>, ctx: &ZygoteCtx) -> Result<(), String> {
    let diagnostics = if ctx.diagnostics {
        // The zygote is not dumpable, so its children's /proc files belong to root: the
        // diagnostics (tests only) open theirs dumpable; `restrict_worker` turns it off again.
        // SAFETY: a plain prctl on this process.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        Some(Diagnostics::open().map_err(|e| format!("diagnostics: {e}"))?)
    } else {
        None
    };
    let mut keep = vec![channel.as_raw_fd()];
    keep.extend(ctx.module_fd);
    if let Some(d) = &diagnostics {
        keep.extend([
            d.status.as_raw_fd(),
            d.fd_dir.as_raw_fd(),
            d.environ.as_raw_fd(),
            d.cmdline.as_raw_fd(),
        ]);
    }
    sandbox::close_fds_except(&keep).map_err(|e| format!("closing descriptors: {e}"))?;
    sandbox::restrict_worker(ctx.cpu_seconds, ctx.data_limit)?;
    sandbox::enter_seccomp(&ctx.filter)?;

    let mut diagnostics = diagnostics;
    for _ in 0..ctx.max_invocations {
        // Pre-instantiate while waiting: it costs the request nothing. Every invocation gets a
        // fresh store and instance, also in a reused worker.
        let mut store = host::new_store(&ctx.engine, ctx.max_memory_bytes, 0);
        store.data_mut().link = Some(Box::new(ChannelLink(channel.clone())));
        let instance = ctx.pre.instantiate(&mut store);

        let Some(header) = wire::read_frame(&mut &**channel, 1 << 20).map_err(|e| e.to_string())?
        else {
            return Ok(()); // retired
        };
        let request: WorkerRequest =
            serde_json::from_slice(&header).map_err(|e| format!("bad request: {e}"))?;
        let answer = match request {
            WorkerRequest::Invoke { limits } => {
                let started = Instant::now();
                let input = wire::read_frame(&mut &**channel, MAX_INPUT)
                    .map_err(|e| e.to_string())?
                    .ok_or("the server sent no input")?;
                let result = invoke(&mut store, instance, &input, &limits);
                let result = host::finish(&mut store, result, &limits, started);
                serde_json::to_vec(&result)
            }
            WorkerRequest::Diagnose => {
                let d = diagnostics.take().ok_or("diagnostics are disabled")?;
                serde_json::to_vec(&d.report(channel.as_raw_fd(), ctx.module_fd)?)
            }
        }
        .map_err(|e| e.to_string())?;
        wire::write_frame(&mut &**channel, &answer).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn invoke(
    store: &mut Store<HostState>,
    instance: wasmtime::Result<wasmtime::Instance>,
    input: &[u8],
    limits: &Limits,
) -> wasmtime::Result<picloud_shared::guest::GuestOutput> {
    // The instance was made under the executor's ceiling; its initial memory must also fit
    // this invocation's limit.
    let initial = store.data().memory.peak;
    if initial > limits.memory_bytes {
        store.data_mut().memory.refused = Some(initial);
        return Err(wasmtime::format_err!("initial memory over the limit"));
    }
    host::arm_store(store, limits)?;
    let instance = instance?;
    host::run(store, &instance, input)
}

/// Descriptors opened before the sandbox closes, so that a test can see the sandbox from
/// inside: `/proc/self/status` is generated when read, so reading it after seccomp shows the
/// state the worker runs in.
struct Diagnostics {
    status: File,
    fd_dir: File,
    /// The environment block the process image started with, which stays in its memory
    /// whatever `clearenv` does: what an escaped tenant could read.
    environ: File,
    cmdline: File,
}

impl Diagnostics {
    fn open() -> std::io::Result<Self> {
        Ok(Self {
            status: File::open("/proc/self/status")?,
            fd_dir: File::open("/proc/self/fd")?,
            environ: File::open("/proc/self/environ")?,
            cmdline: File::open("/proc/self/cmdline")?,
        })
    }

    fn report(
        mut self,
        channel_fd: RawFd,
        module_fd: Option<RawFd>,
    ) -> Result<DiagnosticReport, String> {
        let mut status = String::new();
        self.status
            .read_to_string(&mut status)
            .map_err(|e| format!("reading status: {e}"))?;
        let read_all = |file: &mut File, what: &str| {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map(|_| String::from_utf8_lossy(&bytes).replace('\0', "\n"))
                .map_err(|e| format!("reading {what}: {e}"))
        };
        let environ = read_all(&mut self.environ, "environ")?;
        let cmdline = read_all(&mut self.cmdline, "cmdline")?;
        let own = [
            self.status.as_raw_fd(),
            self.fd_dir.as_raw_fd(),
            self.environ.as_raw_fd(),
            self.cmdline.as_raw_fd(),
        ];
        let fds = list_fds(self.fd_dir.as_raw_fd())?
            .into_iter()
            .filter(|fd| !own.contains(fd))
            .collect();
        Ok(DiagnosticReport {
            status,
            fds,
            channel_fd,
            module_fd,
            environ,
            cmdline,
            env_vars: std::env::vars_os().count(),
            attempts: escape_attempts(),
        })
    }
}

/// Tries what a tenant who broke out of wasm would try first. Each must fail with `EPERM`,
/// the filter's answer. Every call is made with arguments the kernel itself would refuse with
/// another error (`ENOENT`, `EFAULT`, `ESRCH`, `EINVAL`) or that would do no harm if it were
/// allowed, so that `EPERM` proves the filter stopped it and a hole shows as another error or
/// `"allowed"`.
fn escape_attempts() -> std::collections::BTreeMap<String, String> {
    use libc::{c_long, syscall};
    fn outcome(rc: c_long) -> String {
        if rc < 0 {
            std::io::Error::last_os_error().to_string()
        } else {
            "allowed".into()
        }
    }
    const MISSING: &std::ffi::CStr = c"/nonexistent/picloud-escape";
    const NO_PID: c_long = i32::MAX as c_long;
    let null = std::ptr::null::<libc::c_void>();
    let mut out = std::collections::BTreeMap::new();
    let mut attempt = |name: &str, rc: c_long| {
        out.insert(name.to_string(), outcome(rc));
    };
    // SAFETY: raw system calls with null or bogus pointers the kernel checks before use; a call
    // that unexpectedly succeeds is undone at once (descriptors closed, a forked child exits).
    unsafe {
        let fd = syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            MISSING.as_ptr(),
            libc::O_RDONLY,
        );
        attempt("openat", fd);
        let hostname = c"/etc/hostname".as_ptr();
        let fd = syscall(libc::SYS_openat, libc::AT_FDCWD, hostname, libc::O_RDONLY);
        attempt("openat /etc/hostname", fd);
        if fd >= 0 {
            libc::close(fd as i32);
        }
        #[cfg(target_arch = "x86_64")]
        {
            attempt(
                "open",
                syscall(libc::SYS_open, MISSING.as_ptr(), libc::O_RDONLY),
            );
            attempt("creat", syscall(libc::SYS_creat, MISSING.as_ptr(), 0o600));
            let pid = syscall(libc::SYS_fork);
            if pid == 0 {
                libc::_exit(0);
            }
            attempt("fork", pid);
        }
        attempt(
            "mkdirat",
            syscall(libc::SYS_mkdirat, libc::AT_FDCWD, MISSING.as_ptr(), 0o700),
        );
        attempt(
            "unlinkat",
            syscall(libc::SYS_unlinkat, libc::AT_FDCWD, MISSING.as_ptr(), 0),
        );
        attempt("chdir", syscall(libc::SYS_chdir, MISSING.as_ptr()));
        for (name, domain) in [
            ("socket inet", libc::AF_INET),
            ("socket unix", libc::AF_UNIX),
        ] {
            let fd = syscall(libc::SYS_socket, domain, libc::SOCK_STREAM, 0);
            attempt(name, fd);
            if fd >= 0 {
                libc::close(fd as i32);
            }
        }
        attempt(
            "socketpair",
            syscall(
                libc::SYS_socketpair,
                libc::AF_UNIX,
                libc::SOCK_STREAM,
                0,
                null,
            ),
        );
        let pid = syscall(libc::SYS_clone, libc::SIGCHLD as c_long, 0, 0, 0, 0);
        if pid == 0 {
            libc::_exit(0);
        }
        attempt("clone", pid);
        attempt("clone3", syscall(libc::SYS_clone3, null, 0));
        attempt("execve", syscall(libc::SYS_execve, null, null, null));
        attempt(
            "execveat",
            syscall(libc::SYS_execveat, -1, null, null, null, 0),
        );
        attempt(
            "ptrace attach",
            syscall(libc::SYS_ptrace, libc::PTRACE_ATTACH, NO_PID, 0, 0),
        );
        attempt(
            "ptrace traceme",
            syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0),
        );
        attempt("kill", syscall(libc::SYS_kill, NO_PID, 0));
        attempt("tgkill", syscall(libc::SYS_tgkill, -1, -1, 0));
        attempt(
            "process_vm_readv",
            syscall(libc::SYS_process_vm_readv, NO_PID, null, 0, null, 0, 0),
        );
        attempt("unshare", syscall(libc::SYS_unshare, -1));
        attempt("mount", syscall(libc::SYS_mount, null, null, null, 0, null));
        attempt("setuid", syscall(libc::SYS_setuid, -1));
        attempt("memfd_create", syscall(libc::SYS_memfd_create, null, 0));
        attempt("io_uring_setup", syscall(libc::SYS_io_uring_setup, 0, null));
        attempt("ioctl", syscall(libc::SYS_ioctl, -1, libc::TIOCSTI, null));
        attempt("prctl", syscall(libc::SYS_prctl, -1, 0, 0, 0, 0));
    }
    out
}

/// Reads a `/proc/self/fd` directory with getdents64 (the worker cannot open anything).
fn list_fds(dir: RawFd) -> Result<Vec<RawFd>, String> {
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(format!("getdents64: {}", std::io::Error::last_os_error()));
        }
        if n == 0 {
            return Ok(fds);
        }
        let mut off = 0usize;
        while off + 19 <= n as usize {
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[].
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let name = &buf[off + 19..off + reclen];
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            if let Some(fd) = std::str::from_utf8(name).ok().and_then(|s| s.parse().ok()) {
                fds.push(fd);
            }
            off += reclen;
        }
    }
}
