//! Invocation records: one per invocation (HTTP, test, schedule), written in batches off the
//! response path.
//!
//! [`Recorder::record`] never waits: it puts the record on a bounded queue, and when the queue
//! is full the record is dropped and counted ([`Recorder::dropped`], exported as a metric), not
//! hidden. A writer task takes up to [`BATCH`] records at a time, waiting up to [`LINGER`] for
//! a batch to fill, and inserts them in one transaction, retrying a failed batch (the database restarting) before it gives up on it,
//! again counted. A pruner keeps records by age and by count per function.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use picloud_shared::{InvocationResult, LogLine};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::ToSchema;

use crate::store::{AnyStore, Store};

/// Most records written in one transaction.
pub const BATCH: usize = 500;
/// How long the writer waits for a batch to fill before it writes what it has. Under a steady
/// trickle of requests this makes at most ten commits a second instead of one per few records:
/// each commit costs an fsync and, on SQLite, CPU on the cores the requests run on (at one
/// request at a time, committing as records came pushed the p99 from 0.4–0.6 ms to 3–6 ms;
/// under a flood the bigger batches also drop fewer records).
pub const LINGER: Duration = Duration::from_millis(100);
/// Log bytes kept in a record; the invocation's own cap is larger.
pub const MAX_RECORD_LOG_BYTES: usize = 8 << 10;

/// What started an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Http,
    Test,
    Schedule,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Test => "test",
            Self::Schedule => "schedule",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "test" => Self::Test,
            "schedule" => Self::Schedule,
            _ => Self::Http,
        }
    }
}

/// A record as kept and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InvocationRecord {
    /// Increasing; 0 in the live tail (not written yet).
    pub id: i64,
    #[serde(skip)]
    pub tenant_id: i64,
    #[serde(skip)]
    pub function_id: i64,
    pub version: i32,
    pub trigger: Trigger,
    /// The outcome's kind (`ok`, `script_error`, …).
    pub outcome: String,
    /// The HTTP status answered.
    pub status: u16,
    /// When it started, Unix milliseconds.
    pub at: i64,
    pub duration_us: u64,
    pub fuel_used: u64,
    pub peak_memory_bytes: u64,
    /// The error's description, for any outcome but `ok`.
    pub message: Option<String>,
    pub logs: Vec<LogLine>,
    /// Lines were dropped, by the invocation's log cap or the record's.
    pub logs_truncated: bool,
}

impl InvocationRecord {
    /// The record of `result`, its logs cut to [`MAX_RECORD_LOG_BYTES`].
    pub fn new(
        tenant_id: i64,
        function_id: i64,
        version: i32,
        trigger: Trigger,
        result: &InvocationResult,
    ) -> Self {
        let mut logs = Vec::new();
        let mut bytes = 0;
        let mut truncated = result.logs_truncated;
        for line in &result.logs {
            bytes += line.message.len();
            if bytes > MAX_RECORD_LOG_BYTES {
                truncated = true;
                break;
            }
            logs.push(line.clone());
        }
        let status = result
            .response
            .as_ref()
            .map_or(result.outcome.http_status(), |r| r.status);
        let at = crate::store::now_ms() - (result.duration_us / 1000) as i64;
        Self {
            id: 0,
            tenant_id,
            function_id,
            version,
            trigger,
            outcome: result.outcome.kind().to_string(),
            status,
            at,
            duration_us: result.duration_us,
            fuel_used: result.fuel_used,
            peak_memory_bytes: result.peak_memory_bytes,
            message: (!result.outcome.is_ok()).then(|| result.outcome.describe()),
            logs,
            logs_truncated: truncated,
        }
    }
}

/// A stored row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RecordRow {
    id: i64,
    tenant_id: i64,
    function_id: i64,
    version: i32,
    trigger_kind: String,
    outcome: String,
    status: i32,
    at: i64,
    duration_us: i64,
    fuel: i64,
    peak_memory: i64,
    message: Option<String>,
    logs: String,
    logs_truncated: bool,
}

impl From<RecordRow> for InvocationRecord {
    fn from(r: RecordRow) -> Self {
        Self {
            id: r.id,
            tenant_id: r.tenant_id,
            function_id: r.function_id,
            version: r.version,
            trigger: Trigger::parse(&r.trigger_kind),
            outcome: r.outcome,
            status: u16::try_from(r.status).unwrap_or(0),
            at: r.at,
            duration_us: u64::try_from(r.duration_us).unwrap_or(0),
            fuel_used: u64::try_from(r.fuel).unwrap_or(0),
            peak_memory_bytes: u64::try_from(r.peak_memory).unwrap_or(0),
            message: r.message,
            logs: serde_json::from_str(&r.logs).unwrap_or_default(),
            logs_truncated: r.logs_truncated,
        }
    }
}

/// Which records to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    pub outcome: Option<String>,
    /// From this time on (Unix ms, inclusive).
    pub since: Option<i64>,
    /// Before this time (Unix ms, exclusive).
    pub until: Option<i64>,
    /// Only ids below this one: the next page.
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// How the recorder queues and keeps records.
#[derive(Debug, Clone, Copy)]
pub struct RecordConfig {
    /// Records waiting to be written; more are dropped and counted. Default 10,000.
    pub queue: usize,
    /// Records older than this are deleted. Default 7 days.
    pub retention: Duration,
    /// Records kept per function, newest first. Default 10,000.
    pub per_function: u32,
    /// How often the pruner runs. Default 60 s.
    pub prune_every: Duration,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            queue: 10_000,
            retention: Duration::from_secs(7 * 24 * 3600),
            per_function: 10_000,
            prune_every: Duration::from_secs(60),
        }
    }
}

/// Queues records and writes them in batches; see the module documentation.
#[derive(Debug)]
pub struct Recorder {
    queue: mpsc::Sender<InvocationRecord>,
    capacity: usize,
    dropped: AtomicU64,
    written: AtomicU64,
    /// Records queued and not yet written or dropped: what [`Recorder::flush`] waits for.
    outstanding: AtomicU64,
    /// Set by [`Recorder::flush`]: the writer stops lingering.
    flushing: AtomicBool,
    flush_now: tokio::sync::Notify,
    tail: broadcast::Sender<Arc<InvocationRecord>>,
}

impl Recorder {
    /// Starts the writer and the pruner on the current runtime.
    pub fn start(store: AnyStore, config: RecordConfig) -> Arc<Self> {
        let capacity = config.queue.max(1);
        let (queue, rx) = mpsc::channel(capacity);
        let (tail, _) = broadcast::channel(1024);
        let recorder = Arc::new(Self {
            queue,
            capacity,
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            flushing: AtomicBool::new(false),
            flush_now: tokio::sync::Notify::new(),
            tail,
        });
        tokio::spawn(write_batches(Arc::clone(&recorder), store.clone(), rx));
        tokio::spawn(prune(store, config));
        recorder
    }

    /// Queues a record without waiting; a full queue drops it and counts it.
    pub fn record(&self, record: InvocationRecord) {
        let record = Arc::new(record);
        // Nobody tailing is fine.
        let _ = self.tail.send(Arc::clone(&record));
        let record = Arc::try_unwrap(record).unwrap_or_else(|shared| (*shared).clone());
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        if self.queue.try_send(record).is_err() {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes what is queued now, without lingering, waiting at most `within`; true if nothing
    /// was left unwritten. For a server shutting down: records are not lost with the process.
    pub async fn flush(&self, within: Duration) -> bool {
        self.flushing.store(true, Ordering::Release);
        self.flush_now.notify_one();
        let deadline = tokio::time::Instant::now() + within;
        while self.outstanding.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Records dropped so far (queue full, or a batch the database refused again and again).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Records waiting to be written.
    pub fn queued(&self) -> usize {
        self.capacity - self.queue.capacity()
    }

    /// Every record from now on, as it is queued.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<InvocationRecord>> {
        self.tail.subscribe()
    }
}

async fn write_batches(
    recorder: Arc<Recorder>,
    store: AnyStore,
    mut rx: mpsc::Receiver<InvocationRecord>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if batch.len() < BATCH && !recorder.flushing.load(Ordering::Acquire) {
            // Let more arrive (one timer; a flush ends it early), then take what came.
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                () = recorder.flush_now.notified() => {}
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
        }
        let mut attempt = 0;
        loop {
            match store.insert_records(&batch).await {
                Ok(()) => {
                    recorder
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    recorder
                        .outstanding
                        .fetch_sub(batch.len() as u64, Ordering::AcqRel);
                    break;
                }
                Err(e) if attempt < 10 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "cannot write invocation records; retrying");
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, records = batch.len(), "dropping invocation records");
                    recorder
                        .dropped
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    recorder
                        .outstanding
                        .fetch_sub(batch.len() as u64, Ordering::AcqRel);
                    break;
                }
            }
        }
        batch.clear();
    }
}

async fn prune(store: AnyStore, config: RecordConfig) {
    let mut tick = tokio::time::interval(config.prune_every);
    loop {
        tick.tick().await;
        let older_than = crate::store::now_ms() - config.retention.as_millis() as i64;
        match store.prune_records(older_than, config.per_function).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "pruned invocation records"),
            Err(e) => tracing::warn!(error = %e, "cannot prune invocation records"),
        }
    }
}
