//! [`Isolation::Instance`](crate::Isolation::Instance): a fresh wasm instance per invocation,
//! on a small pool of threads inside the executor's own process, with the pooling allocator and
//! an epoch deadline.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use picloud_shared::host::{HostCalls, HostReply};
use picloud_shared::{InvocationResult, Limits, Outcome};
use wasmtime::{Engine, InstancePre, UpdateDeadline};

use crate::error::ExecutorError;
use crate::host::{self, CallBudget, HostLink, HostState, encode_reply};
use crate::{ExecutorConfig, Isolation, Lane, engine};

/// Threads that run wasm need room for `MAX_WASM_STACK` plus host frames.
const RUNNER_STACK: usize = 8 << 20;
/// Epoch tick while invocations run; the deadline is checked against the clock at each tick.
const TICK: Duration = Duration::from_millis(1);

struct Job {
    input: Vec<u8>,
    limits: Limits,
    host: Option<(tokio::runtime::Handle, Arc<dyn HostCalls>)>,
    queued: Instant,
    reply: tokio::sync::oneshot::Sender<InvocationResult>,
    /// Set when the caller stopped waiting: a queued job is skipped, a running one interrupted
    /// at the next epoch tick.
    cancelled: Arc<AtomicBool>,
}

/// Sets its flag when dropped before [`CancelOnDrop::finished`].
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl CancelOnDrop {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Release);
        }
    }
}

/// Jobs waiting for a runner thread, in two lanes: a runner takes from [`Lane::First`]
/// before [`Lane::Second`], so a tenant's flood never queues another tenant behind it.
#[derive(Default)]
struct JobQueue {
    state: Mutex<Queued>,
    ready: Condvar,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Queued {
    first: VecDeque<Job>,
    second: VecDeque<Job>,
    closed: bool,
}

impl JobQueue {
    /// Queues `job`; `false` once the executor shut down.
    fn push(&self, job: Job, lane: Lane) -> bool {
        let Ok(mut q) = self.state.lock() else {
            return false;
        };
        if q.closed {
            return false;
        }
        match lane {
            Lane::First => q.first.push_back(job),
            Lane::Second => q.second.push_back(job),
        }
        drop(q);
        self.ready.notify_one();
        true
    }

    /// The next job, waiting for one; `None` once closed.
    fn next(&self) -> Option<Job> {
        let mut q = self.state.lock().ok()?;
        loop {
            if let Some(job) = q.first.pop_front().or_else(|| q.second.pop_front()) {
                return Some(job);
            }
            if q.closed {
                return None;
            }
            q = self.ready.wait(q).ok()?;
        }
    }

    fn close(&self) {
        if let Ok(mut q) = self.state.lock() {
            q.closed = true;
        }
        self.ready.notify_all();
    }
}

/// Host calls in instance mode: answered on this runner thread by blocking on the caller's
/// runtime, within the invocation's deadline (the epoch cannot interrupt a host call).
struct InstanceLink {
    runtime: tokio::runtime::Handle,
    budget: CallBudget,
    deadline: Instant,
}

impl HostLink for InstanceLink {
    fn call(&mut self, call: &[u8]) -> Vec<u8> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let budget = &mut self.budget;
        self.runtime.block_on(async {
            tokio::time::timeout(left, budget.answer(call))
                .await
                .unwrap_or_else(|_| encode_reply(&HostReply::error("the invocation timed out")))
        })
    }
}

#[derive(Debug)]
pub(crate) struct InstanceExecutor {
    jobs: Arc<JobQueue>,
    runners: Vec<JoinHandle<()>>,
    ticker: Arc<Ticker>,
    ticker_thread: Option<JoinHandle<()>>,
}

impl InstanceExecutor {
    pub fn start(config: &ExecutorConfig) -> Result<Self, ExecutorError> {
        let engine = engine::engine(config, Isolation::Instance)?;
        let guest = engine::load_guest(&engine, Isolation::Instance, &config.cache_dir)?;
        let linker = host::linker(&engine, &guest.module).map_err(ExecutorError::guest)?;
        let pre = linker
            .instantiate_pre(&guest.module)
            .map_err(ExecutorError::guest)?;

        let ticker = Arc::new(Ticker {
            engine: engine.clone(),
            state: Mutex::new(TickerState {
                running: 0,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let ticker_thread = {
            let ticker = ticker.clone();
            std::thread::Builder::new()
                .name("picloud-epoch".into())
                .spawn(move || ticker.run())?
        };

        let jobs = Arc::new(JobQueue::default());
        let mut runners = Vec::new();
        for i in 0..config.instance.threads.max(1) {
            let jobs = jobs.clone();
            let pre = pre.clone();
            let ticker = ticker.clone();
            runners.push(
                std::thread::Builder::new()
                    .name(format!("picloud-instance-{i}"))
                    .stack_size(RUNNER_STACK)
                    .spawn(move || {
                        loop {
                            let Some(job) = jobs.next() else { return };
                            if job.cancelled.load(Ordering::Acquire) {
                                continue;
                            }
                            let waited = job.queued.elapsed();
                            let mut result = run_job(
                                &pre,
                                &ticker,
                                job.input,
                                job.limits,
                                job.host,
                                job.cancelled,
                            );
                            result.wait_us = waited.as_micros() as u64;
                            result.duration_us += result.wait_us;
                            let _ = job.reply.send(result);
                        }
                    })?,
            );
        }
        Ok(Self {
            jobs,
            runners,
            ticker,
            ticker_thread: Some(ticker_thread),
        })
    }

    pub async fn invoke(
        &self,
        input: Vec<u8>,
        limits: Limits,
        host: Option<Arc<dyn HostCalls>>,
        lane: Lane,
    ) -> InvocationResult {
        let started = Instant::now();
        let host = host.and_then(|h| Some((tokio::runtime::Handle::try_current().ok()?, h)));
        let (reply, answer) = tokio::sync::oneshot::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let sent = self.jobs.push(
            Job {
                input,
                limits,
                host,
                queued: started,
                reply,
                cancelled: Arc::clone(&cancelled),
            },
            lane,
        );
        if !sent {
            return InvocationResult::failed(
                Outcome::Internal {
                    message: "the executor has shut down".into(),
                },
                started.elapsed(),
            );
        }
        // The caller may stop waiting (its client went away): the job is then skipped or
        // interrupted rather than run to its deadline.
        let abandoned = CancelOnDrop(Some(cancelled));
        let result = answer.await.unwrap_or_else(|_| {
            InvocationResult::failed(
                Outcome::Internal {
                    message: "the runner thread stopped before answering".into(),
                },
                started.elapsed(),
            )
        });
        abandoned.finished();
        result
    }
}

impl Drop for InstanceExecutor {
    fn drop(&mut self) {
        self.jobs.close();
        for runner in self.runners.drain(..) {
            let _ = runner.join();
        }
        if let Ok(mut state) = self.ticker.state.lock() {
            state.stop = true;
        }
        self.ticker.wake.notify_all();
        if let Some(t) = self.ticker_thread.take() {
            let _ = t.join();
        }
    }
}

fn run_job(
    pre: &InstancePre<HostState>,
    ticker: &Ticker,
    input: Vec<u8>,
    limits: Limits,
    calls: Option<(tokio::runtime::Handle, Arc<dyn HostCalls>)>,
    cancelled: Arc<AtomicBool>,
) -> InvocationResult {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(limits.timeout_ms);
    let mut store = host::new_store(
        pre.module().engine(),
        limits.memory_bytes,
        limits.max_log_bytes,
    );
    if let Some((runtime, calls)) = calls {
        store.data_mut().link = Some(Box::new(InstanceLink {
            runtime,
            budget: CallBudget::new(Some(calls)),
            deadline,
        }));
    }
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(
            if Instant::now() >= deadline || cancelled.load(Ordering::Acquire) {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            },
        )
    });
    let result = {
        let _running = ticker.running();
        host::arm_store(&mut store, &limits)
            .and_then(|()| pre.instantiate(&mut store))
            .and_then(|instance| host::run(&mut store, &instance, &input))
    };
    host::finish(&mut store, result, &limits, started)
}

/// Advances the engine's epoch every [`TICK`] while at least one invocation runs, and sleeps
/// on a condition variable otherwise: no CPU when idle.
#[derive(Debug)]
struct Ticker {
    engine: Engine,
    state: Mutex<TickerState>,
    wake: Condvar,
}

#[derive(Debug)]
struct TickerState {
    running: usize,
    stop: bool,
}

impl Ticker {
    fn run(&self) {
        loop {
            {
                let Ok(mut state) = self.state.lock() else {
                    return;
                };
                while state.running == 0 && !state.stop {
                    state = match self.wake.wait(state) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                }
                if state.stop {
                    return;
                }
            }
            std::thread::sleep(TICK);
            self.engine.increment_epoch();
        }
    }

    fn running(&self) -> Running<'_> {
        if let Ok(mut state) = self.state.lock() {
            state.running += 1;
            if state.running == 1 {
                self.wake.notify_one();
            }
        }
        Running(self)
    }
}

struct Running<'a>(&'a Ticker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.running -= 1;
        }
    }
}
