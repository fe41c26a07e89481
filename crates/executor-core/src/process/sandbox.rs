//! The layers around a worker process. The zygote applies the process-wide ones once
//! (namespaces, dropping root); each worker applies its own after fork and before it sees a
//! request (descriptors, environment, rlimits, no-new-privs, seccomp).

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use nix::sched::CloneFlags;
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Gid, Uid};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use crate::SandboxReport;

/// The user a zygote started as root switches to when [`SANDBOX_USER`] does not exist.
const NOBODY: u32 = 65534;

/// The user a zygote started as root switches to, when the system has one by this name: a uid
/// of its own, which no other service's files or processes share (`nobody` is everyone's).
pub const SANDBOX_USER: &str = "picloud-sandbox";

/// The uid and gid to drop root to: [`SANDBOX_USER`]'s, else `nobody`'s.
fn sandbox_ids() -> (Uid, Gid) {
    match nix::unistd::User::from_name(SANDBOX_USER) {
        Ok(Some(user)) if !user.uid.is_root() => (user.uid, user.gid),
        _ => (Uid::from_raw(NOBODY), Gid::from_raw(NOBODY)),
    }
}

/// Puts the zygote (and so every worker it forks) in fresh network and IPC namespaces with no
/// interfaces but a down loopback, and drops root. Each layer is tried and reported; none is
/// required, because the kernel or container may refuse them, and seccomp already denies
/// sockets.
pub(crate) fn isolate_zygote() -> SandboxReport {
    let mut report = SandboxReport::default();
    if Uid::effective().is_root() {
        report.network_namespace =
            nix::sched::unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC).is_ok();
        let (uid, gid) = sandbox_ids();
        let dropped = nix::unistd::setgroups(&[]).is_ok()
            && nix::unistd::setgid(gid).is_ok()
            && nix::unistd::setuid(uid).is_ok();
        report.dropped_root = dropped;
        if dropped {
            // Changing credentials made the process non-dumpable, which hands its /proc files
            // to root and so forbids writing its own uid_map. Workers set it back to 0.
            // SAFETY: a plain prctl on this process.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
            report.user_namespace = enter_user_namespace(CloneFlags::empty());
        }
    } else {
        report.user_namespace =
            enter_user_namespace(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC);
        report.network_namespace = report.user_namespace;
    }
    report.uid = Uid::effective().as_raw();
    // Not dumpable from here on (it was set back only to write the user namespace's maps): no
    // process of the same uid may ptrace the zygote or read its memory, and its /proc files
    // belong to root.
    // SAFETY: a plain prctl on this process.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    report
}

/// The zygote's private writable memory (`VmData`, the measure `RLIMIT_DATA` limits), in
/// bytes: what every worker starts with before its instance grows.
pub(crate) fn data_size() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// A user namespace in which the process keeps its own uid and gid (mapped to themselves), so
/// any capability it gains applies only inside namespaces it owns.
fn enter_user_namespace(extra: CloneFlags) -> bool {
    let uid = Uid::effective().as_raw();
    let gid = Gid::effective().as_raw();
    if nix::sched::unshare(CloneFlags::CLONE_NEWUSER | extra).is_err() {
        return false;
    }
    std::fs::write("/proc/self/setgroups", "deny").is_ok()
        && std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")).is_ok()
        && std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")).is_ok()
}

/// The system calls a worker may make after it is sandboxed: reading and writing its channel,
/// memory management for the wasm instance, signal return for wasm traps, the clock and
/// randomness the guest's imports need, and exit. Everything else fails with `EPERM`: no
/// `open`, `socket`, `execve`, `fork`/`clone`, `ptrace`, `kill`.
pub(crate) fn seccomp_program() -> Result<BpfProgram, String> {
    let allowed: &[i64] = &[
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_close,
        libc::SYS_lseek,
        libc::SYS_getdents64,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_mremap,
        libc::SYS_brk,
        libc::SYS_membarrier,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigaction,
        libc::SYS_sigaltstack,
        libc::SYS_futex,
        libc::SYS_clock_gettime,
        libc::SYS_clock_getres,
        libc::SYS_gettimeofday,
        libc::SYS_getrandom,
        libc::SYS_sched_yield,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_restart_syscall,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        allowed.iter().map(|&nr| (nr, Vec::new())).collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| e.to_string())?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

/// Closes every descriptor but `keep`.
pub(crate) fn close_fds_except(keep: &[RawFd]) -> std::io::Result<()> {
    let mut keep: Vec<u32> = keep.iter().map(|&fd| fd as u32).collect();
    keep.sort_unstable();
    let mut next = 0u32;
    for fd in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if fd > next {
            let last = if fd == u32::MAX { u32::MAX } else { fd - 1 };
            // SAFETY: close_range only closes descriptors; the ones this process still uses
            // are in `keep`.
            let rc = unsafe { libc::syscall(libc::SYS_close_range, next, last, 0u32) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        next = fd.saturating_add(1);
    }
    Ok(())
}

/// The per-worker layers short of seccomp.
/// `data_limit` bounds the worker's private writable memory (`RLIMIT_DATA`): a second stop
/// behind the `ResourceLimiter`, should wasm's bounds ever be escaped.
pub(crate) fn restrict_worker(cpu_seconds: u64, data_limit: Option<u64>) -> Result<(), String> {
    // SAFETY: the worker is single-threaded (forked from the single-threaded zygote), so
    // nothing reads the environment concurrently.
    unsafe { libc::clearenv() };
    let limits = [
        (Resource::RLIMIT_NPROC, 0),
        (Resource::RLIMIT_CORE, 0),
        (Resource::RLIMIT_FSIZE, 0),
        (Resource::RLIMIT_NOFILE, 16),
        (Resource::RLIMIT_MEMLOCK, 0),
        (Resource::RLIMIT_MSGQUEUE, 0),
        (Resource::RLIMIT_CPU, cpu_seconds.max(1)),
    ];
    for (resource, value) in limits {
        setrlimit(resource, value, value).map_err(|e| format!("setrlimit {resource:?}: {e}"))?;
    }
    if let Some(limit) = data_limit {
        setrlimit(Resource::RLIMIT_DATA, limit, limit)
            .map_err(|e| format!("setrlimit RLIMIT_DATA: {e}"))?;
    }
    // SAFETY: plain prctl calls on this process.
    unsafe {
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0
        {
            return Err(format!("prctl: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Sets no-new-privs and installs the filter (seccompiler does both).
pub(crate) fn enter_seccomp(program: &BpfProgram) -> Result<(), String> {
    seccompiler::apply_filter(program).map_err(|e| format!("seccomp: {e}"))
}
