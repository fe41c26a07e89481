//! [`Isolation::Process`](crate::Isolation::Process): the pre-warmed pool of sandboxed worker
//! processes, one invocation each.
//!
//! Threads and tasks: a *spawner* thread owns the zygote and its control socket; it blocks on a
//! channel until the pool asks for workers, so an idle pool costs no CPU. Taking a worker is a
//! semaphore permit plus a pop. A shrink task sleeps only while the pool is above its floor.

mod sandbox;
pub(crate) mod wire;
mod worker;
pub(crate) mod zygote;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use picloud_shared::{FunctionRef, InvocationResult, Limits, Outcome};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use self::wire::{CALL_TAG, WorkerRequest, ZygoteHello, ZygoteReady};
use crate::Lane;
use crate::error::ExecutorError;
use crate::host::CallBudget;
use crate::{
    DiagnosticReport, ExecutorConfig, Isolation, PoolStats, ProcessConfig, SandboxReport, engine,
};
use picloud_shared::host::HostCalls;

/// A warm worker as the server holds it.
#[derive(Debug)]
struct Worker {
    pid: i32,
    channel: UnixStream,
    pidfd: OwnedFd,
    /// Invocations answered so far.
    served: u32,
    /// In the idle scheduling class (see [`set_yielding`]).
    yielding: bool,
}

impl Worker {
    fn kill(&self) {
        // SAFETY: signals the process the pidfd names, which cannot be a recycled pid.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
    }
}

/// Warm workers kept for [`Lane::First`]: a tenant that floods its functions never takes
/// the last one, so the next tenant to arrive does not wait for a fork.
const RESERVE: usize = 1;

/// An invocation waiting for a worker.
type Waiter = tokio::sync::oneshot::Sender<Worker>;

#[derive(Debug, Default)]
struct Idle {
    warm: VecDeque<Worker>,
    first: VecDeque<Waiter>,
    second: VecDeque<Waiter>,
    closed: bool,
}

/// A request to the spawner thread: fork this many workers.
#[derive(Debug)]
struct Spawn(usize);

#[derive(Debug)]
struct Pool {
    /// Warm workers and the invocations waiting for one, under one lock so that a worker
    /// arriving and an invocation starting to wait never miss each other.
    idle: Mutex<Idle>,
    spawner: Mutex<Option<mpsc::Sender<Spawn>>>,
    pending: AtomicUsize,
    target: AtomicUsize,
    busy: Mutex<HashSet<i32>>,
    /// Workers that answered and may serve the same function again.
    reusable: Mutex<HashMap<FunctionRef, Vec<Worker>>>,
    reused_total: AtomicU64,
    last_miss: Mutex<Instant>,
    grown: Notify,
    spawned_total: AtomicU64,
    misses_total: AtomicU64,
    zygote_pid: AtomicUsize,
    config: ProcessConfig,
}

impl Pool {
    /// Asks the zygote for enough workers to reach the target.
    fn refill(&self) {
        let warm = self.idle.lock().map_or(0, |i| i.warm.len());
        let have = warm + self.pending.load(Ordering::Acquire);
        let target = self.target.load(Ordering::Relaxed);
        if have < target {
            let n = target - have;
            self.pending.fetch_add(n, Ordering::AcqRel);
            let sent = self
                .spawner
                .lock()
                .ok()
                .and_then(|s| s.as_ref().map(|s| s.send(Spawn(n)).is_ok()));
            if sent != Some(true) {
                self.pending.fetch_sub(n, Ordering::AcqRel);
            }
        }
    }

    /// A new worker: to the longest-waiting invocation of the first lane, else the second,
    /// else warm.
    fn add(&self, worker: Worker) {
        if let Ok(mut idle) = self.idle.lock() {
            let mut next = Some(worker);
            while let Some(worker) = next.take() {
                // The second lane is served only once the reserve is warm.
                let waiter = match idle.first.pop_front() {
                    Some(w) => Some(w),
                    None if idle.warm.len() >= self.reserve() => idle.second.pop_front(),
                    None => None,
                };
                let Some(waiter) = waiter else {
                    if !idle.closed {
                        idle.warm.push_back(worker);
                    }
                    break;
                };
                // An error hands the worker back: that invocation stopped waiting.
                next = waiter.send(worker).err();
            }
        }
        self.pending.fetch_sub(1, Ordering::AcqRel);
        self.spawned_total.fetch_add(1, Ordering::Relaxed);
        // A worker kept as the reserve while others wait: make sure more are coming.
        if self.idle.lock().is_ok_and(|i| !i.second.is_empty()) {
            self.refill();
        }
    }

    /// Warm workers the second lane leaves alone: [`RESERVE`], unless the pool may never hold
    /// more than that (then the second lane would wait forever).
    fn reserve(&self) -> usize {
        if self.config.max_warm > RESERVE {
            RESERVE
        } else {
            0
        }
    }

    /// A warm worker, or the next one to arrive. Invocations in [`Lane::First`] get arriving
    /// workers before those in [`Lane::Second`] (a tenant that already runs others), so that a
    /// flood of one tenant never queues another tenant's request behind it.
    async fn take(&self, lane: Lane) -> Result<Worker, ExecutorError> {
        let arrival = {
            let mut idle = self.idle.lock().map_err(|_| ExecutorError::ShutDown)?;
            if idle.closed {
                return Err(ExecutorError::ShutDown);
            }
            let reserve = if lane == Lane::First {
                0
            } else {
                self.reserve()
            };
            if idle.warm.len() > reserve
                && let Some(worker) = idle.warm.pop_front()
            {
                drop(idle);
                self.refill();
                return Ok(worker);
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            match lane {
                Lane::First => idle.first.push_back(tx),
                Lane::Second => idle.second.push_back(tx),
            }
            rx
        };
        self.missed();
        let worker = arrival.await.map_err(|_| ExecutorError::ShutDown)?;
        self.refill();
        Ok(worker)
    }

    /// A worker that already served `owner` and may serve it again.
    fn take_reusable(&self, owner: &FunctionRef) -> Option<Worker> {
        let mut reusable = self.reusable.lock().ok()?;
        let workers = reusable.get_mut(owner)?;
        let worker = workers.pop();
        if workers.is_empty() {
            reusable.remove(owner);
        }
        if worker.is_some() {
            self.reused_total.fetch_add(1, Ordering::Relaxed);
        }
        worker
    }

    /// Keeps a worker that answered for `owner`'s next invocation, unless it has served its
    /// quota or `max_warm` workers are parked already (then it is dismissed and exits).
    fn park(&self, owner: &FunctionRef, worker: Worker) {
        if worker.served >= self.config.max_invocations_per_worker {
            return;
        }
        if let Ok(mut reusable) = self.reusable.lock() {
            let parked: usize = reusable.values().map(Vec::len).sum();
            if parked < self.config.max_warm {
                reusable.entry(owner.clone()).or_default().push(worker);
            }
        }
    }

    /// No warm worker was there: grow the target (doubling, up to `max_warm`).
    fn missed(&self) {
        self.misses_total.fetch_add(1, Ordering::Relaxed);
        let max = self.config.max_warm.max(1);
        let _ = self
            .target
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t * 2).clamp(1, max))
            });
        if let Ok(mut last) = self.last_miss.lock() {
            *last = Instant::now();
        }
        self.grown.notify_one();
        self.refill();
    }

    /// Back to `min_warm` once no miss happened for `shrink_after`; surplus workers are
    /// dismissed (their channel closes and they exit).
    async fn shrink_loop(self: Arc<Self>) {
        loop {
            if self.target.load(Ordering::Acquire) <= self.config.min_warm {
                self.grown.notified().await;
                continue;
            }
            let since = self.last_miss.lock().map_or(Instant::now(), |l| *l);
            let due = since + self.config.shrink_after;
            if Instant::now() < due {
                tokio::time::sleep_until(due.into()).await;
                continue;
            }
            self.target.store(self.config.min_warm, Ordering::Release);
            if let Ok(mut reusable) = self.reusable.lock() {
                reusable.clear();
            }
            if let Ok(mut idle) = self.idle.lock() {
                while idle.warm.len() > self.config.min_warm {
                    drop(idle.warm.pop_back());
                }
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct ProcessExecutor {
    pool: Arc<Pool>,
    sandbox: SandboxReport,
    shrinker: tokio::task::JoinHandle<()>,
}

impl ProcessExecutor {
    pub async fn start(config: &ExecutorConfig) -> Result<Self, ExecutorError> {
        let cfg = config.clone();
        // Compiling the guest (first start only) is CPU work; keep it off the async threads.
        let module_path = tokio::task::spawn_blocking(move || {
            let engine = engine::engine(&cfg, Isolation::Process)?;
            engine::load_guest(&engine, Isolation::Process, &cfg.cache_dir).map(|g| g.path)
        })
        .await
        .map_err(|e| ExecutorError::Zygote(e.to_string()))??;

        // The zygote is this very binary, also when it is started again after the file on
        // disk was replaced (an upgrade in progress): the running executable, held open, is
        // executed through its descriptor, never looked up by path again.
        let (program, running) = match &config.process.program {
            Some(p) => (p.clone(), None),
            None => {
                let opened = std::fs::File::open("/proc/self/exe")?;
                // Above the descriptors the zygote's start-up sets (its control socket is 3).
                // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor, owned here.
                let raised = unsafe { libc::fcntl(opened.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
                if raised < 0 {
                    return Err(std::io::Error::last_os_error().into());
                }
                // SAFETY: `raised` was just made and nothing else owns it.
                let running = unsafe { OwnedFd::from_raw_fd(raised) };
                let path =
                    std::path::PathBuf::from(format!("/proc/self/fd/{}", running.as_raw_fd()));
                (path, Some(running))
            }
        };
        let hello = ZygoteHello {
            module_path,
            max_memory_bytes: config.max_memory_bytes,
            consume_fuel: config.consume_fuel,
            worker_cpu_seconds: config.process.worker_cpu_seconds,
            max_invocations_per_worker: config.process.max_invocations_per_worker,
            diagnostics: config.process.diagnostics,
        };
        let pool = Arc::new(Pool {
            idle: Mutex::new(Idle::default()),
            spawner: Mutex::new(None),
            pending: AtomicUsize::new(0),
            target: AtomicUsize::new(config.process.min_warm),
            busy: Mutex::new(HashSet::new()),
            reusable: Mutex::new(HashMap::new()),
            reused_total: AtomicU64::new(0),
            last_miss: Mutex::new(Instant::now()),
            grown: Notify::new(),
            spawned_total: AtomicU64::new(0),
            misses_total: AtomicU64::new(0),
            zygote_pid: AtomicUsize::new(0),
            config: config.process.clone(),
        });
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        {
            let pool = Arc::downgrade(&pool);
            std::thread::Builder::new()
                .name("picloud-spawner".into())
                .spawn(move || {
                    // Held for as long as zygotes may be started.
                    let _running = running;
                    spawner(program, hello, rx, pool, ready_tx);
                })?;
        }
        let sandbox = ready_rx
            .await
            .map_err(|_| ExecutorError::Zygote("the spawner thread died".into()))??;
        if let Ok(mut s) = pool.spawner.lock() {
            *s = Some(tx);
        }
        pool.refill();
        let shrinker = tokio::spawn(pool.clone().shrink_loop());
        tracing::info!(?sandbox, "process pool ready");
        Ok(Self {
            pool,
            sandbox,
            shrinker,
        })
    }

    pub fn sandbox(&self) -> &SandboxReport {
        &self.sandbox
    }

    pub fn stats(&self) -> PoolStats {
        let p = &self.pool;
        PoolStats {
            warm: p.idle.lock().map_or(0, |i| i.warm.len()),
            busy: p.busy.lock().map_or(0, |b| b.len()),
            pending: p.pending.load(Ordering::Relaxed),
            target: p.target.load(Ordering::Relaxed),
            spawned_total: p.spawned_total.load(Ordering::Relaxed),
            misses_total: p.misses_total.load(Ordering::Relaxed),
            reusable: p
                .reusable
                .lock()
                .map_or(0, |r| r.values().map(Vec::len).sum()),
            reused_total: p.reused_total.load(Ordering::Relaxed),
        }
    }

    pub fn busy_pids(&self) -> Vec<i32> {
        self.pool
            .busy
            .lock()
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn zygote_pid(&self) -> Option<i32> {
        match self.pool.zygote_pid.load(Ordering::Relaxed) {
            0 => None,
            pid => Some(pid as i32),
        }
    }

    pub async fn invoke(
        &self,
        input: Vec<u8>,
        limits: Limits,
        owner: Option<&FunctionRef>,
        host: Option<Arc<dyn HostCalls>>,
        crowded: bool,
    ) -> InvocationResult {
        let started = Instant::now();
        let lane = if crowded { Lane::Second } else { Lane::First };
        let timeout = Duration::from_millis(limits.timeout_ms);
        let timed_out = || {
            InvocationResult::failed(
                Outcome::Timeout {
                    limit_ms: limits.timeout_ms,
                },
                started.elapsed(),
            )
        };
        let reused = owner.and_then(|o| self.pool.take_reusable(o));
        let mut worker = match reused {
            Some(w) => w,
            // Waiting for a worker counts against the invocation's deadline.
            None => match tokio::time::timeout(timeout, self.pool.take(lane)).await {
                Ok(Ok(w)) => w,
                Ok(Err(e)) => {
                    return InvocationResult::failed(
                        Outcome::Internal {
                            message: e.to_string(),
                        },
                        started.elapsed(),
                    );
                }
                Err(_) => return timed_out(),
            },
        };
        let waited = started.elapsed();
        let Some(left) = timeout.checked_sub(waited).filter(|d| !d.is_zero()) else {
            // Unused, but not handed back: the pool makes a fresh one.
            drop(worker);
            return timed_out();
        };
        let _busy = Busy::new(&self.pool, worker.pid);
        set_yielding(&mut worker, crowded && self.pool.config.busy_tenants_yield);
        let header = match serde_json::to_vec(&WorkerRequest::Invoke {
            limits: limits.clone(),
        }) {
            Ok(h) => h,
            Err(e) => {
                return InvocationResult::failed(
                    Outcome::Internal {
                        message: e.to_string(),
                    },
                    started.elapsed(),
                );
            }
        };
        let frame = wire::frame(&[&header, &input]);
        let mut calls = CallBudget::new(host);
        // Whoever awaits this may stop waiting (its client went away): then the worker is
        // killed at once, not left to run to its deadline outside every concurrency limit.
        let abandoned = KillUnlessAnswered(Some(&worker));
        let answer = exchange(&worker, &frame, left, &mut calls).await;
        abandoned.answered();
        let mut result = match answer {
            Exchange::Answer(bytes) => match serde_json::from_slice::<InvocationResult>(&bytes) {
                Ok(mut answer) => {
                    answer.distrust(&limits);
                    answer
                }
                Err(e) => {
                    worker.kill();
                    InvocationResult::failed(
                        Outcome::WorkerCrashed {
                            message: format!("unreadable answer from the worker: {e}"),
                        },
                        started.elapsed(),
                    )
                }
            },
            Exchange::Died(e) => InvocationResult::failed(
                Outcome::WorkerCrashed {
                    message: format!("the worker process ended without answering ({e})"),
                },
                started.elapsed(),
            ),
            Exchange::TimedOut => {
                worker.kill();
                InvocationResult::failed(
                    Outcome::Timeout {
                        limit_ms: limits.timeout_ms,
                    },
                    started.elapsed(),
                )
            }
        };
        result.duration_us = started.elapsed().as_micros() as u64;
        result.wait_us = waited.as_micros() as u64;
        drop(_busy);
        // Only a worker that answered normally may be reused: one that timed out was killed,
        // and one that failed internally is not trusted with another invocation.
        let healthy = !matches!(
            result.outcome,
            Outcome::Timeout { .. } | Outcome::WorkerCrashed { .. } | Outcome::Internal { .. }
        );
        if let (Some(owner), true) = (owner, healthy) {
            worker.served += 1;
            self.pool.park(owner, worker);
        }
        result
    }

    pub async fn diagnose(&self) -> Result<DiagnosticReport, ExecutorError> {
        let worker = self.pool.take(Lane::First).await?;
        let header = serde_json::to_vec(&WorkerRequest::Diagnose)
            .map_err(|e| ExecutorError::Zygote(e.to_string()))?;
        let frame = wire::frame(&[&header]);
        match exchange(
            &worker,
            &frame,
            Duration::from_secs(10),
            &mut CallBudget::new(None),
        )
        .await
        {
            Exchange::Answer(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ExecutorError::Zygote(format!(
                    "bad diagnostic report: {e}: {}",
                    String::from_utf8_lossy(&bytes)
                ))
            }),
            Exchange::Died(e) => Err(ExecutorError::Zygote(format!("worker died: {e}"))),
            Exchange::TimedOut => {
                worker.kill();
                Err(ExecutorError::Zygote("worker did not answer".into()))
            }
        }
    }
}

impl Drop for ProcessExecutor {
    fn drop(&mut self) {
        self.shrinker.abort();
        // Closing the channel ends the spawner thread, which ends the zygote; dropping warm
        // workers closes their channels, which ends them.
        if let Ok(mut s) = self.pool.spawner.lock() {
            s.take();
        }
        if let Ok(mut idle) = self.pool.idle.lock() {
            // Waiters see their channel close: the executor has shut down.
            *idle = Idle {
                closed: true,
                ..Idle::default()
            };
        }
        if let Ok(mut r) = self.pool.reusable.lock() {
            r.clear();
        }
    }
}

/// Puts a worker in the idle scheduling class (`SCHED_IDLE`) before it runs, or back in the
/// normal one. An idle-class task runs only on CPU time no normal task wants, and a normal
/// task that wakes preempts it at once (a lower nice value still waits out the running task's
/// slice). A failure (no right to leave the idle class again) leaves it as it was, which only
/// ever errs on the side of yielding.
fn set_yielding(worker: &mut Worker, yielding: bool) {
    if worker.yielding == yielding {
        return;
    }
    let policy = if yielding {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler(2) on a worker process this pool owns, with a valid param.
    let rc = unsafe { libc::sched_setscheduler(worker.pid, policy, &param) };
    if rc == 0 {
        worker.yielding = yielding;
    }
}

/// Kills its worker when dropped before [`KillUnlessAnswered::answered`]: the invocation's
/// future was dropped mid-exchange.
struct KillUnlessAnswered<'a>(Option<&'a Worker>);

impl KillUnlessAnswered<'_> {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for KillUnlessAnswered<'_> {
    fn drop(&mut self) {
        if let Some(worker) = self.0 {
            worker.kill();
        }
    }
}

struct Busy<'a> {
    pool: &'a Pool,
    pid: i32,
}

impl<'a> Busy<'a> {
    fn new(pool: &'a Pool, pid: i32) -> Self {
        if let Ok(mut b) = pool.busy.lock() {
            b.insert(pid);
        }
        Self { pool, pid }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.pool.busy.lock() {
            b.remove(&self.pid);
        }
    }
}

enum Exchange {
    Answer(Vec<u8>),
    Died(std::io::Error),
    TimedOut,
}

/// Sends `frame` to the worker and waits for its answer, at most `deadline`, answering the
/// host calls it makes meanwhile. The deadline is enforced from here: a forked worker has no
/// thread to interrupt itself.
async fn exchange(
    worker: &Worker,
    frame: &[u8],
    deadline: Duration,
    calls: &mut CallBudget,
) -> Exchange {
    let stream = match worker
        .channel
        .try_clone()
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .and_then(tokio::net::UnixStream::from_std)
    {
        Ok(s) => s,
        Err(e) => return Exchange::Died(e),
    };
    let mut stream = stream;
    let talk = async {
        stream.write_all(frame).await?;
        loop {
            let bytes = wire::read_worker_frame(&mut stream).await?;
            match bytes.split_first() {
                Some((&CALL_TAG, call)) => {
                    let reply = calls.answer(call).await;
                    stream.write_all(&wire::frame(&[&reply])).await?;
                }
                _ => return Ok(bytes),
            }
        }
    };
    match tokio::time::timeout(deadline, talk).await {
        Ok(Ok(bytes)) => Exchange::Answer(bytes),
        Ok(Err(e)) => Exchange::Died(e),
        Err(_) => Exchange::TimedOut,
    }
}

/// The spawner thread: starts the zygote, then turns spawn requests into workers. If the
/// zygote dies it is started again (with a pause, so a zygote that cannot start does not spin).
fn spawner(
    program: std::path::PathBuf,
    hello: ZygoteHello,
    rx: mpsc::Receiver<Spawn>,
    pool: std::sync::Weak<Pool>,
    ready: tokio::sync::oneshot::Sender<Result<SandboxReport, ExecutorError>>,
) {
    let mut zygote = match Zygote::start(&program, &hello) {
        Ok(z) => z,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if let Some(p) = pool.upgrade() {
        p.zygote_pid
            .store(zygote.child.id() as usize, Ordering::Relaxed);
    }
    let _ = ready.send(Ok(zygote.sandbox.clone()));
    while let Ok(Spawn(n)) = rx.recv() {
        let mut left = n;
        while left > 0 {
            let Some(p) = pool.upgrade() else { return };
            match zygote.spawn(left) {
                Ok(workers) => {
                    left -= workers.len();
                    for w in workers {
                        p.add(w);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the zygote failed; starting a new one");
                    std::thread::sleep(Duration::from_millis(200));
                    match Zygote::start(&program, &hello) {
                        Ok(z) => {
                            p.zygote_pid.store(z.child.id() as usize, Ordering::Relaxed);
                            zygote = z;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not restart the zygote");
                            p.pending.fetch_sub(left, Ordering::AcqRel);
                            left = 0;
                        }
                    }
                }
            }
        }
    }
}

struct Zygote {
    child: Child,
    control: UnixStream,
    sandbox: SandboxReport,
}

impl Zygote {
    fn start(program: &std::path::Path, hello: &ZygoteHello) -> Result<Self, ExecutorError> {
        let (mut control, theirs) = UnixStream::pair()?;
        let their_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(program);
        cmd.arg(zygote::ZYGOTE_ARG)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: dup2 is async-signal-safe; it runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(their_fd, zygote::CONTROL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| ExecutorError::Zygote(format!("{}: {e}", program.display())))?;
        drop(theirs);
        let hello = serde_json::to_vec(hello).map_err(|e| ExecutorError::Zygote(e.to_string()))?;
        wire::write_frame(&mut control, &hello)?;
        let ready = wire::read_frame(&mut control, 1 << 20)?.ok_or_else(|| {
            ExecutorError::Zygote("the zygote exited during start-up (see its log above)".into())
        })?;
        match serde_json::from_slice::<ZygoteReady>(&ready)
            .map_err(|e| ExecutorError::Zygote(e.to_string()))?
        {
            ZygoteReady::Ready { sandbox } => Ok(Self {
                child,
                control,
                sandbox,
            }),
            ZygoteReady::Failed { error } => Err(ExecutorError::Zygote(error)),
        }
    }

    fn spawn(&mut self, n: usize) -> std::io::Result<Vec<Worker>> {
        let n = n.min(64);
        wire::write_frame(&mut self.control, &(n as u32).to_le_bytes())?;
        (0..n).map(|_| self.receive()).collect()
    }

    fn receive(&self) -> std::io::Result<Worker> {
        let mut pid = [0u8; 4];
        let mut iov = [IoSliceMut::new(&mut pid)];
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let msg = recvmsg::<()>(
            self.control.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        if msg.bytes == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the zygote is gone",
            ));
        }
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(r) = cmsg {
                fds.extend(r);
            }
        }
        let [channel, pidfd] = fds[..] else {
            for fd in fds {
                // SAFETY: closing descriptors we just received and own.
                unsafe { libc::close(fd) };
            }
            return Err(std::io::Error::other(
                "the zygote sent a worker without descriptors",
            ));
        };
        // SAFETY: both descriptors were just received with SCM_RIGHTS and are owned by us.
        let (channel, pidfd) = unsafe {
            (
                UnixStream::from_raw_fd(channel),
                OwnedFd::from_raw_fd(pidfd),
            )
        };
        Ok(Worker {
            pid: i32::from_le_bytes(pid),
            channel,
            pidfd,
            served: 0,
            yielding: false,
        })
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
