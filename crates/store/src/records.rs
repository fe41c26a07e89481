//! Invocation records: one per invocation (HTTP, test, schedule), written in batches off the
//! response path.
//!
//! [`Recorder::record`] never waits: it puts the record on a bounded queue, and when the queue
//! is full the record is dropped and counted ([`Recorder::dropped`], exported as a metric), not
//! hidden. A writer task takes up to [`BATCH`] records at a time, waiting up to [`LINGER`] for
//! a batch to fill, and inserts them in one transaction, retrying a failed batch (the database
//! restarting). A pruner keeps records by age and by count per function.
//!
//! With a spool ([`RecordConfig::spool`], which the servers always give), each queued record is
//! also journalled to a file until it is written (see `spool.rs`): a process killed with
//! records queued writes them when it starts again, and a batch the database refuses is
//! retried until it is written instead of being dropped. Each record carries a unique key, so
//! none is written twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use picloud_shared::{InvocationRequest, InvocationResult, LogLine};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::spool::{self, Spool};
use crate::store::{AnyStore, StoreError};

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
/// The most of a request's path a record keeps, in bytes.
pub const MAX_RECORD_PATH_BYTES: usize = 1024;
/// The most of a request's body a record keeps, in bytes.
pub const MAX_RECORD_BODY_BYTES: usize = 2 << 10;
/// The most of a request's headers (names and values) a record keeps, in bytes; the query's
/// parameters have the same budget.
pub const MAX_RECORD_HEADER_BYTES: usize = 2 << 10;
/// What a record shows instead of a credential's value.
pub const REDACTED: &str = "[redacted]";

/// What a record keeps of the request it answered, beyond its method and path: enough to see
/// what was asked, never a credential. Sized so that a queue full of records stays small
/// (a few KiB each).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecordedRequest {
    /// The query's parameters; a value whose name says it is a secret (`token`, `key`,
    /// `signature`, …) is `[redacted]`.
    pub query: BTreeMap<String, String>,
    /// The headers; `authorization`, cookies and any whose name says it is a secret are
    /// `[redacted]`.
    pub headers: BTreeMap<String, String>,
    /// The body's first 2 KiB.
    pub body: String,
    /// Something was left out: the body's end, or parameters or headers past 2 KiB.
    pub truncated: bool,
}

impl RecordedRequest {
    fn of(request: &InvocationRequest) -> Self {
        let mut truncated = false;
        let mut keep = |from: &BTreeMap<String, String>| {
            let mut kept = BTreeMap::new();
            let mut bytes = 0;
            for (name, value) in from {
                let value = if names_a_secret(name) {
                    REDACTED
                } else {
                    value.as_str()
                };
                // One huge entry is left out, not everything after it.
                let size = name.len() + value.len();
                if bytes + size > MAX_RECORD_HEADER_BYTES {
                    truncated = true;
                    continue;
                }
                bytes += size;
                kept.insert(name.clone(), value.to_string());
            }
            kept
        };
        let query = keep(&request.query);
        let headers = keep(&request.headers);
        let body = prefix(&request.body, MAX_RECORD_BODY_BYTES);
        truncated |= body.len() < request.body.len();
        Self {
            query,
            headers,
            body: body.to_string(),
            truncated,
        }
    }
}

/// Whether a header or parameter name says its value is a credential. Generous on purpose: a
/// debugging aid that hides an idempotency key costs little; one that shows a token leaks it
/// to everyone who reads the tenant's logs.
fn names_a_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "sig"
        || [
            "auth",
            "token",
            "secret",
            "passw",
            "cookie",
            "session",
            "key",
            "signature",
            "jwt",
            "csrf",
        ]
        .iter()
        .any(|word| name.contains(word))
}

/// The longest start of `text` of at most `bytes` bytes that ends on a character boundary.
fn prefix(text: &str, bytes: usize) -> &str {
    &text[..text.floor_char_boundary(bytes)]
}

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
    /// Random (below 2^53), chosen when the invocation ends: the same in the live tail, in an
    /// endpoint's error answer (`invocation`) and once written.
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
    /// The request's method, for an HTTP or test invocation.
    #[serde(default)]
    pub method: Option<String>,
    /// The request's path (its first [`MAX_RECORD_PATH_BYTES`]), for an HTTP or test invocation.
    #[serde(default)]
    pub path: Option<String>,
    /// The schedule that ran it, for a scheduled invocation.
    #[serde(default)]
    pub schedule_id: Option<i64>,
    /// The rest of the request, for an HTTP or test invocation.
    #[serde(default)]
    pub request: Option<RecordedRequest>,
    /// Unique to this record (random): a record written again after a crash is ignored.
    #[serde(skip)]
    pub key: String,
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
            id: crate::store::random_id(),
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
            method: None,
            path: None,
            schedule_id: None,
            request: None,
            key: record_key(),
        }
    }

    /// This record, saying which request it answered: its method, the start of its path, and
    /// the rest as [`RecordedRequest`] keeps it.
    #[must_use]
    pub fn answering(mut self, request: &InvocationRequest) -> Self {
        self.method = Some(request.method.chars().take(16).collect());
        self.path = Some(prefix(&request.path, MAX_RECORD_PATH_BYTES).to_string());
        self.request = Some(RecordedRequest::of(request));
        self
    }

    /// This record, saying which schedule ran it.
    #[must_use]
    pub fn scheduled_by(mut self, schedule_id: i64) -> Self {
        self.schedule_id = Some(schedule_id);
        self
    }
}

/// What an invocation's record says when its caller went away before the answer.
pub const CANCELLED: &str = "the client went away before the answer; the invocation was stopped";

/// Records an invocation as `cancelled` if dropped before [`Unanswered::answered`]: the
/// future running it was dropped because its client disconnected (the executor stops the
/// invocation itself). `observe` also sees the result (the endpoints' metrics); generic, so
/// that the invocation path allocates nothing for it.
#[must_use = "dropping it at once records a cancellation"]
pub struct Unanswered<'a, F: FnOnce(&InvocationResult) = fn(&InvocationResult)> {
    record: Option<(&'a Recorder, InvocationRecordTemplate)>,
    observe: Option<F>,
    started: std::time::Instant,
}

/// Who a record is about, before there is a result.
#[derive(Debug, Clone, Copy)]
pub struct InvocationRecordTemplate {
    pub tenant_id: i64,
    pub function_id: i64,
    pub version: i32,
    pub trigger: Trigger,
}

impl<'a> Unanswered<'a> {
    pub fn new(recorder: Option<&'a Recorder>, template: InvocationRecordTemplate) -> Self {
        Self {
            record: recorder.map(|r| (r, template)),
            observe: None,
            started: std::time::Instant::now(),
        }
    }

    /// Also hands the `cancelled` result to `observe`.
    pub fn observed<G: FnOnce(&InvocationResult)>(mut self, observe: G) -> Unanswered<'a, G> {
        Unanswered {
            record: self.record.take(),
            observe: Some(observe),
            started: self.started,
        }
    }
}

impl<F: FnOnce(&InvocationResult)> Unanswered<'_, F> {
    /// The invocation answered: nothing to record here.
    pub fn answered(mut self) {
        self.record = None;
        self.observe = None;
    }
}

impl<F: FnOnce(&InvocationResult)> Drop for Unanswered<'_, F> {
    fn drop(&mut self) {
        if self.record.is_none() && self.observe.is_none() {
            return;
        }
        let result = InvocationResult::failed(
            picloud_shared::Outcome::Cancelled {
                message: CANCELLED.into(),
            },
            self.started.elapsed(),
        );
        if let Some(observe) = self.observe.take() {
            observe(&result);
        }
        if let Some((recorder, t)) = self.record.take() {
            recorder.record(InvocationRecord::new(
                t.tenant_id,
                t.function_id,
                t.version,
                t.trigger,
                &result,
            ));
        }
    }
}

impl<F: FnOnce(&InvocationResult)> std::fmt::Debug for Unanswered<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unanswered")
            .field("armed", &self.record.is_some())
            .finish_non_exhaustive()
    }
}

/// 128 random bits, hex.
fn record_key() -> String {
    let mut bytes = [0u8; 16];
    // Without randomness the key still differs by time and counter.
    if getrandom::fill(&mut bytes).is_err() {
        static N: AtomicU64 = AtomicU64::new(0);
        bytes[..8].copy_from_slice(&crate::store::now_ms().to_le_bytes());
        bytes[8..].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    hex::encode(bytes)
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
    method: Option<String>,
    path: Option<String>,
    schedule_id: Option<i64>,
    request: Option<String>,
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
            method: r.method,
            path: r.path,
            schedule_id: r.schedule_id,
            request: r.request.and_then(|text| serde_json::from_str(&text).ok()),
            key: String::new(),
        }
    }
}

/// What the statistics of a function need of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSample {
    pub at: i64,
    pub outcome: String,
    pub duration_us: u64,
}

/// A stored row of [`RecordSample`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SampleRow {
    at: i64,
    outcome: String,
    duration_us: i64,
}

impl From<SampleRow> for RecordSample {
    fn from(r: SampleRow) -> Self {
        Self {
            at: r.at,
            outcome: r.outcome,
            duration_us: u64::try_from(r.duration_us).unwrap_or(0),
        }
    }
}

/// A function's traffic over a window, from its records (the dashboard's list and charts).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FunctionStats {
    /// The window, Unix ms: from `since` (inclusive) to `until` (exclusive).
    pub since: i64,
    pub until: i64,
    pub invocations: u64,
    /// Invocations whose outcome is not `ok`.
    pub errors: u64,
    /// Invocations by outcome (only outcomes that occurred).
    pub by_outcome: std::collections::BTreeMap<String, u64>,
    /// Of the durations in the window, in milliseconds; `null` without invocations.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The newest invocation in the window, Unix ms.
    pub last_at: Option<i64>,
    /// The window cut in equal buckets, oldest first.
    pub buckets: Vec<StatsBucket>,
}

/// One bucket of [`FunctionStats`].
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StatsBucket {
    /// Its start, Unix ms.
    pub start: i64,
    pub invocations: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The `q` quantile (0..=1) of sorted durations, in milliseconds (nearest rank).
fn quantile_ms(sorted_us: &[u64], q: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((sorted_us.len() as f64) * q).ceil() as usize;
    let i = rank.clamp(1, sorted_us.len()) - 1;
    Some(sorted_us[i] as f64 / 1000.0)
}

/// The statistics of `samples` in `[since, until)`, cut in `buckets` buckets (at least 1).
#[must_use]
pub fn stats(samples: &[RecordSample], since: i64, until: i64, buckets: u32) -> FunctionStats {
    let n = i64::from(buckets.max(1));
    let width = ((until - since) / n).max(1);
    let mut per_bucket: Vec<(u64, Vec<u64>)> = vec![(0, Vec::new()); n as usize];
    let mut all = Vec::new();
    let mut by_outcome = std::collections::BTreeMap::new();
    let (mut errors, mut last_at) = (0, None);
    for s in samples.iter().filter(|s| s.at >= since && s.at < until) {
        let failed = s.outcome != "ok";
        errors += u64::from(failed);
        *by_outcome.entry(s.outcome.clone()).or_insert(0) += 1;
        last_at = last_at.max(Some(s.at));
        all.push(s.duration_us);
        let b = usize::try_from(((s.at - since) / width).min(n - 1)).unwrap_or(0);
        per_bucket[b].0 += u64::from(failed);
        per_bucket[b].1.push(s.duration_us);
    }
    all.sort_unstable();
    FunctionStats {
        since,
        until,
        invocations: all.len() as u64,
        errors,
        by_outcome,
        p50_ms: quantile_ms(&all, 0.5),
        p99_ms: quantile_ms(&all, 0.99),
        last_at,
        buckets: per_bucket
            .into_iter()
            .enumerate()
            .map(|(i, (errors, mut durations))| {
                durations.sort_unstable();
                StatsBucket {
                    start: since + width * i as i64,
                    invocations: durations.len() as u64,
                    errors,
                    p50_ms: quantile_ms(&durations, 0.5),
                    p99_ms: quantile_ms(&durations, 0.99),
                }
            })
            .collect(),
    }
}

/// Which records to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    /// One outcome kind, or `error`: any but `ok`.
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
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// Records waiting to be written; more are dropped and counted. Default 10,000.
    pub queue: usize,
    /// Records older than this are deleted. Default 7 days.
    pub retention: Duration,
    /// Records kept per function, newest first. Default 10,000.
    pub per_function: u32,
    /// Records kept per tenant, all its functions together, newest first: a tenant with many
    /// functions cannot fill the disk with records. Default 100,000.
    pub per_tenant: u32,
    /// How often the pruner runs. Default 60 s.
    pub prune_every: Duration,
    /// A directory where queued records are journalled until written, so that none is lost
    /// with the process. Default none (tests of the recorder alone).
    pub spool: Option<std::path::PathBuf>,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            queue: 10_000,
            retention: Duration::from_secs(7 * 24 * 3600),
            per_function: 10_000,
            per_tenant: 100_000,
            prune_every: Duration::from_secs(60),
            spool: None,
        }
    }
}

/// Queues records and writes them in batches; see the module documentation.
#[derive(Debug)]
pub struct Recorder {
    queue: mpsc::Sender<InvocationRecord>,
    capacity: usize,
    dropped: AtomicU64,
    rejected: AtomicU64,
    written: AtomicU64,
    /// Records queued and not yet written or dropped: what [`Recorder::flush`] waits for.
    outstanding: AtomicU64,
    /// Woken when `outstanding` comes down to zero.
    drained: tokio::sync::Notify,
    /// Set by [`Recorder::flush`]: the writer stops lingering.
    flushing: AtomicBool,
    flush_now: tokio::sync::Notify,
    tails: Tails,
    spool: Option<Arc<Spool>>,
    /// To the spool's writer thread: a record's line and the record, appended to the spool and
    /// then queued there, so that no disk write happens on the request path.
    spooler: Option<std::sync::mpsc::SyncSender<ToSpool>>,
    /// Set when a [`Recorder::record_spooled`] gave up waiting for the spool's thread (a
    /// stalled disk); cleared by the thread once it has caught up. While set, callers do not
    /// wait at all, so that a dying SD card costs each request nothing, not [`SPOOL_WAIT`].
    spool_behind: Arc<AtomicBool>,
    /// Joined when the recorder is dropped: what it was handed is in the spool by then.
    spool_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has appended everything sent.
        drop(self.spooler.take());
        if let Some(thread) = self.spool_thread.get_mut().ok().and_then(Option::take) {
            let _ = thread.join();
        }
    }
}

/// A record on its way to the spool's thread: its spool line, the record, and whom to tell once
/// the line is appended (or the record dropped).
struct ToSpool {
    line: Vec<u8>,
    record: InvocationRecord,
    appended: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The longest [`Recorder::record_spooled`] waits for its record to reach the spool. The
/// append itself takes microseconds (a write to the page cache); the bound is for a disk that
/// stalls, so that it delays an answer by at most this, once.
pub const SPOOL_WAIT: Duration = Duration::from_millis(100);

/// Most records the spool's thread appends in one write.
const SPOOL_BATCH: usize = 256;

/// Records a live tail keeps that its reader has not taken yet; past this, its newest records
/// are dropped and counted for that tail alone.
pub const TAIL_QUEUE: usize = 256;
/// Live tails one tenant may have open at once.
pub const MAX_TAILS_PER_TENANT: usize = 16;

/// The live tails: each its own bounded queue, so that one tenant's traffic never pushes
/// another tenant's records out of a tail, and a tail's drop count names only its own
/// records.
#[derive(Debug, Default)]
struct Tails {
    /// How many are open: `record` takes the lock only when some are.
    open: std::sync::atomic::AtomicUsize,
    subscribers: std::sync::Mutex<Vec<TailSubscriber>>,
}

#[derive(Debug)]
struct TailSubscriber {
    tenant_id: i64,
    function_id: i64,
    queue: mpsc::Sender<Arc<InvocationRecord>>,
    dropped: Arc<AtomicU64>,
}

impl Tails {
    fn publish(&self, record: &InvocationRecord) {
        if self.open.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let mut shared: Option<Arc<InvocationRecord>> = None;
        subscribers.retain(|s| {
            if s.queue.is_closed() {
                return false;
            }
            if s.function_id == record.function_id {
                let shared = shared.get_or_insert_with(|| Arc::new(record.clone()));
                match s.queue.try_send(Arc::clone(shared)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
        self.open.store(subscribers.len(), Ordering::Release);
    }

    fn subscribe(&self, tenant_id: i64, function_id: i64) -> Result<Tail, TooManyTails> {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subscribers.retain(|s| !s.queue.is_closed());
        if subscribers
            .iter()
            .filter(|s| s.tenant_id == tenant_id)
            .count()
            >= MAX_TAILS_PER_TENANT
        {
            return Err(TooManyTails);
        }
        let (queue, records) = mpsc::channel(TAIL_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        subscribers.push(TailSubscriber {
            tenant_id,
            function_id,
            queue,
            dropped: Arc::clone(&dropped),
        });
        self.open.store(subscribers.len(), Ordering::Release);
        Ok(Tail { records, dropped })
    }
}

/// A tenant already has [`MAX_TAILS_PER_TENANT`] live tails open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a tenant may have at most {MAX_TAILS_PER_TENANT} live tails open")]
pub struct TooManyTails;

/// One live tail of a function's records, as they are queued.
#[derive(Debug)]
pub struct Tail {
    /// The function's records, oldest first.
    pub records: mpsc::Receiver<Arc<InvocationRecord>>,
    dropped: Arc<AtomicU64>,
}

impl Tail {
    /// Records of this tail's function dropped since the last call, because its reader fell
    /// [`TAIL_QUEUE`] records behind.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

impl Recorder {
    /// Starts the writer and the pruner on the current runtime. Records a previous process
    /// left in the spool are written first.
    ///
    /// # Errors
    ///
    /// When the spool directory cannot be opened.
    pub fn start(store: AnyStore, config: RecordConfig) -> std::io::Result<Arc<Self>> {
        let (spool, left) = match &config.spool {
            Some(dir) => {
                let (spool, left) = Spool::open(dir)?;
                (Some(Arc::new(spool)), left)
            }
            None => (None, Vec::new()),
        };
        let capacity = config.queue.max(1);
        let (queue, rx) = mpsc::channel(capacity);
        let (spooler, spooled) = match &spool {
            Some(_) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let recorder = Arc::new(Self {
            queue,
            capacity,
            dropped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            written: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            drained: tokio::sync::Notify::new(),
            flushing: AtomicBool::new(false),
            flush_now: tokio::sync::Notify::new(),
            tails: Tails::default(),
            spool,
            spooler,
            spool_behind: Arc::new(AtomicBool::new(false)),
            spool_thread: std::sync::Mutex::new(None),
        });
        if let (Some(spooled), Some(spool)) = (spooled, &recorder.spool) {
            let weak = Arc::downgrade(&recorder);
            let spool = Arc::clone(spool);
            let queue = recorder.queue.clone();
            let behind = Arc::clone(&recorder.spool_behind);
            let thread = std::thread::Builder::new()
                .name("picloud-spool".into())
                .spawn(move || spool_lines(&spool, &queue, &weak, &spooled, &behind))?;
            if let Ok(mut slot) = recorder.spool_thread.lock() {
                *slot = Some(thread);
            }
        }
        tokio::spawn(write_batches(
            Arc::clone(&recorder),
            store.clone(),
            rx,
            left,
        ));
        tokio::spawn(prune(store, config));
        Ok(recorder)
    }

    /// Queues a record without waiting; a full queue drops it and counts it.
    pub fn record(&self, record: InvocationRecord) {
        self.enqueue(record, None);
    }

    /// Queues a record and waits (at most [`SPOOL_WAIT`], without blocking a thread) until it
    /// is in the spool, so that a caller who answers afterwards answers only what survives the
    /// process being killed. A spool known to be behind is not waited for.
    pub async fn record_spooled(&self, record: InvocationRecord) {
        if self.spooler.is_none() || self.spool_behind.load(Ordering::Acquire) {
            self.enqueue(record, None);
            return;
        }
        let (appended, spooled) = tokio::sync::oneshot::channel();
        self.enqueue(record, Some(appended));
        // A dropped sender (the record was dropped, the process is ending) ends the wait too.
        if tokio::time::timeout(SPOOL_WAIT, spooled).await.is_err() {
            self.spool_behind.store(true, Ordering::Release);
            tracing::warn!(
                wait_ms = SPOOL_WAIT.as_millis() as u64,
                "the record spool is behind (a slow disk?): answering without waiting for it"
            );
        }
    }

    fn enqueue(
        &self,
        mut record: InvocationRecord,
        appended: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        make_storable(&mut record);
        self.tails.publish(&record);
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        let queued = match &self.spooler {
            // The spool's thread appends it and then queues it (see `spool_lines`).
            Some(spooler) => spooler
                .try_send(ToSpool {
                    line: Spool::line(&record),
                    record,
                    appended,
                })
                .is_ok(),
            None => self.queue.try_send(record).is_ok(),
        };
        if !queued {
            self.not_queued();
        }
    }

    fn not_queued(&self) {
        self.settled(1);
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` outstanding records were written or dropped; the last wakes [`Recorder::flush`].
    fn settled(&self, n: u64) {
        if self.outstanding.fetch_sub(n, Ordering::AcqRel) == n {
            self.drained.notify_waiters();
        }
    }

    /// Writes what is queued now, without lingering, waiting at most `within`; true if nothing
    /// was left unwritten. For a server shutting down: records are not lost with the process.
    pub async fn flush(&self, within: Duration) -> bool {
        self.flushing.store(true, Ordering::Release);
        self.flush_now.notify_one();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the check, so that the last record settled meanwhile is not
            // missed.
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.outstanding.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return self.outstanding.load(Ordering::Acquire) == 0;
            }
        }
    }

    /// Records dropped so far (queue full, or a batch the database refused again and again).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records the database refused (each tried on its own), set aside and never retried.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Records waiting to be written.
    pub fn queued(&self) -> usize {
        self.capacity - self.queue.capacity()
    }

    /// A live tail of `function_id`'s records from now on, as they are queued, in a queue of
    /// its own ([`TAIL_QUEUE`]).
    ///
    /// # Errors
    ///
    /// [`TooManyTails`] when the tenant already has [`MAX_TAILS_PER_TENANT`] open.
    pub fn subscribe(&self, tenant_id: i64, function_id: i64) -> Result<Tail, TooManyTails> {
        self.tails.subscribe(tenant_id, function_id)
    }
}

/// The spool's writer thread: appends records' lines to the spool and queues the records, both
/// under the spool's lock (what sealing relies on), as many as are waiting in one write, then
/// tells those waiting for it. A slow disk (an SD card) slows this thread, never a request:
/// past its queue, records are dropped and counted as a full record queue drops them. It ends
/// with the recorder, after appending everything it was sent (so a recorder dropped with
/// records still on their way leaves them in the spool).
fn spool_lines(
    spool: &Spool,
    queue: &mpsc::Sender<InvocationRecord>,
    recorder: &std::sync::Weak<Recorder>,
    lines: &std::sync::mpsc::Receiver<ToSpool>,
    behind: &AtomicBool,
) {
    let mut batch = Vec::with_capacity(SPOOL_BATCH);
    while let Ok(first) = lines.recv() {
        batch.push(first);
        // Whether the channel was found empty: the thread has caught up with its callers.
        let mut drained = false;
        while batch.len() < SPOOL_BATCH {
            match lines.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => {
                    drained = true;
                    break;
                }
            }
        }
        let mut waiting = Vec::with_capacity(batch.len());
        let taken = spool.append_queued(
            batch.drain(..).map(|m| {
                waiting.push(m.appended);
                (m.line, m.record)
            }),
            |record| match queue.try_send(record) {
                Ok(()) => true,
                // The writer is gone (the process is ending): the line is kept for the next
                // start.
                Err(mpsc::error::TrySendError::Closed(_)) => true,
                Err(mpsc::error::TrySendError::Full(_)) => false,
            },
        );
        let dropped = taken.iter().filter(|took| !**took).count();
        if dropped > 0
            && let Some(recorder) = recorder.upgrade()
        {
            for _ in 0..dropped {
                recorder.not_queued();
            }
        }
        for appended in waiting.into_iter().flatten() {
            let _ = appended.send(());
        }
        if drained && behind.load(Ordering::Relaxed) {
            behind.store(false, Ordering::Release);
            tracing::info!("the record spool has caught up");
        }
    }
}

async fn write_batches(
    recorder: Arc<Recorder>,
    store: AnyStore,
    mut rx: mpsc::Receiver<InvocationRecord>,
    left: Vec<std::path::PathBuf>,
) {
    // What a previous process left: written before anything new, kept until written.
    for path in left {
        match spool::read_segment(&path) {
            Ok(records) => {
                for chunk in records.chunks(BATCH) {
                    insert(&recorder, &store, chunk).await;
                }
                if !records.is_empty() {
                    tracing::info!(records = records.len(), path = %path.display(), "wrote spooled invocation records");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot read a spool segment")
            }
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(error = %e, path = %path.display(), "cannot remove a spool segment");
        }
    }
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if batch.len() < BATCH && !recorder.flushing.load(Ordering::Acquire) {
            // Let more arrive (one timer; a flush ends it early), then take what came.
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                () = recorder.flush_now.notified() => {}
            }
        }
        // With a spool, everything queued goes, so that the segments sealed here hold
        // nothing unwritten once the batch is in.
        let sealed = match &recorder.spool {
            Some(spool) => match spool.seal(|| drain(&mut rx, &mut batch, usize::MAX)) {
                Ok((sealed, ())) => Some(sealed),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a new spool segment");
                    drain(&mut rx, &mut batch, BATCH);
                    None
                }
            },
            None => {
                drain(&mut rx, &mut batch, BATCH);
                None
            }
        };
        let written = insert(&recorder, &store, &batch).await;
        if written && let (Some(spool), Some(sealed)) = (&recorder.spool, sealed) {
            // Off the runtime's threads: a slow disk delays only this.
            let spool = Arc::clone(spool);
            let _ = tokio::task::spawn_blocking(move || spool.remove_through(sealed)).await;
        }
        // Settled only now, the spool's segments removed too: a flush that returns before
        // them leaves a stopping server's spool holding written records (replayed at the next
        // start as duplicates the store skips, but a spool that should be empty is not).
        recorder.settled(batch.len() as u64);
        batch.clear();
    }
}

/// Moves queued records into `batch` until it holds `up_to` or the queue is empty.
fn drain(
    rx: &mut mpsc::Receiver<InvocationRecord>,
    batch: &mut Vec<InvocationRecord>,
    up_to: usize,
) {
    while batch.len() < up_to {
        match rx.try_recv() {
            Ok(record) => batch.push(record),
            Err(_) => break,
        }
    }
}

/// Text the database can store: every NUL (which PostgreSQL refuses in text) becomes U+FFFD.
/// Strings are UTF-8 already (the executor reads a script's output lossily). Done before a
/// record is queued, so that neither the queue nor the spool holds a record that would be
/// refused.
fn make_storable(record: &mut InvocationRecord) {
    fn clean(text: &mut String) {
        if text.contains('\0') {
            *text = text.replace('\0', "\u{FFFD}");
        }
    }
    if let Some(message) = &mut record.message {
        clean(message);
    }
    for line in &mut record.logs {
        clean(&mut line.message);
    }
    for text in [&mut record.method, &mut record.path].into_iter().flatten() {
        clean(text);
    }
    // The request is stored as JSON text, where a NUL is written `\u0000`: nothing to do.
}

/// What came of writing some records with [`write_retrying`].
enum Write {
    Written,
    /// The database answered that it cannot store them; trying again would not help.
    Refused(StoreError),
    /// The database stayed away through every retry (only without a spool).
    GaveUp(StoreError),
}

/// Writes `records`, retrying while the database is away: ten times without a spool, for as
/// long as it takes with one (they are safe there). A refusal is not retried.
async fn write_retrying(
    recorder: &Recorder,
    store: &AnyStore,
    records: &[InvocationRecord],
) -> Write {
    let mut attempt: u32 = 0;
    loop {
        match store.insert_records(records).await {
            Ok(()) => return Write::Written,
            Err(e) if e.is_refusal() => return Write::Refused(e),
            Err(e) if attempt < 10 || recorder.spool.is_some() => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, records = records.len(), "cannot write invocation records; retrying");
                tokio::time::sleep(Duration::from_millis(200) * attempt.min(10)).await;
            }
            Err(e) => return Write::GaveUp(e),
        }
    }
}

/// Writes `records` (see [`write_retrying`]); those the database still does not take are
/// dropped and counted. A batch the database refuses is written row by row instead, so that
/// one row it cannot store never holds back the others (see [`insert_each`]). Returns whether
/// every record was dealt with: written, or set aside.
async fn insert(recorder: &Recorder, store: &AnyStore, records: &[InvocationRecord]) -> bool {
    match write_retrying(recorder, store, records).await {
        Write::Written => {
            recorder
                .written
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            true
        }
        Write::Refused(e) => {
            tracing::warn!(error = %e, records = records.len(), "the database refused a batch of invocation records; writing them one by one");
            insert_each(recorder, store, records).await
        }
        Write::GaveUp(e) => {
            tracing::error!(error = %e, records = records.len(), "dropping invocation records");
            recorder
                .dropped
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            false
        }
    }
}

/// Writes `records` one at a time, each with [`write_retrying`]; a record the database
/// refuses on its own is set aside (`rejected.jsonl` beside the spool), counted
/// (`picloud_records_rejected_total`) and never tried again. Returns whether every record was
/// written or set aside.
async fn insert_each(recorder: &Recorder, store: &AnyStore, records: &[InvocationRecord]) -> bool {
    let mut all = true;
    for record in records {
        match write_retrying(recorder, store, std::slice::from_ref(record)).await {
            Write::Written => {
                recorder.written.fetch_add(1, Ordering::Relaxed);
            }
            Write::Refused(e) => {
                tracing::warn!(error = %e, key = %record.key, function = record.function_id, "the database refused an invocation record; set aside");
                recorder.rejected.fetch_add(1, Ordering::Relaxed);
                if let Some(spool) = &recorder.spool {
                    spool.set_aside(record);
                }
            }
            Write::GaveUp(e) => {
                tracing::error!(error = %e, "dropping an invocation record");
                recorder.dropped.fetch_add(1, Ordering::Relaxed);
                all = false;
            }
        }
    }
    all
}

async fn prune(store: AnyStore, config: RecordConfig) {
    let mut tick = tokio::time::interval(config.prune_every);
    loop {
        tick.tick().await;
        let older_than = crate::store::now_ms() - config.retention.as_millis() as i64;
        match store
            .prune_records(older_than, config.per_function, config.per_tenant)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "pruned invocation records"),
            Err(e) => tracing::warn!(error = %e, "cannot prune invocation records"),
        }
    }
}

#[cfg(test)]
mod tests {

    /// A record keeps what was asked, never a credential, and a bounded amount of it.
    #[test]
    fn a_recorded_request_redacts_credentials_and_is_bounded() {
        let mut request = picloud_shared::InvocationRequest::get("/x");
        for (name, value) in [
            ("Authorization", "Bearer pc_secret"),
            ("cookie", "sid=1"),
            ("X-Upstream-Token", "t"),
            ("accept", "*/*"),
        ] {
            request.headers.insert(name.into(), value.into());
        }
        request.query.insert("page".into(), "2".into());
        request.query.insert("sig".into(), "abc".into());
        request.query.insert("filler".into(), "v".repeat(3000));
        request.body = "b".repeat(10);
        let kept = super::RecordedRequest::of(&request);
        assert_eq!(kept.headers["Authorization"], super::REDACTED);
        assert_eq!(kept.headers["cookie"], super::REDACTED);
        assert_eq!(kept.headers["X-Upstream-Token"], super::REDACTED);
        assert_eq!(kept.headers["accept"], "*/*");
        assert_eq!(kept.query["page"], "2");
        assert_eq!(
            kept.query.get("sig").map(String::as_str),
            Some(super::REDACTED)
        );
        assert!(!kept.query.contains_key("filler"), "past the budget");
        assert!(kept.truncated);
        assert_eq!(kept.body, "b".repeat(10));
        let serialized = serde_json::to_string(&kept).expect("json");
        assert!(!serialized.contains("pc_secret") && !serialized.contains("sid=1"));
    }
    use super::*;

    /// A recorder with a spool on a fresh SQLite store holding one tenant's function.
    struct Spooled {
        dir: std::path::PathBuf,
        store: AnyStore,
        tenant: i64,
        function: i64,
        recorder: Arc<Recorder>,
    }

    async fn spooled(name: &str) -> Spooled {
        let dir = std::env::temp_dir().join(format!("picloud-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = AnyStore::Sqlite(
            crate::SqliteStore::open(&dir.join("db.sqlite"))
                .await
                .expect("store"),
        );
        let tenant = store.create_tenant("t").await.expect("tenant").id;
        let function = store
            .create_function(tenant, "f", true)
            .await
            .expect("function")
            .id;
        let recorder = Recorder::start(
            store.clone(),
            RecordConfig {
                spool: Some(dir.join("spool")),
                ..RecordConfig::default()
            },
        )
        .expect("recorder");
        Spooled {
            dir,
            store,
            tenant,
            function,
            recorder,
        }
    }

    /// A spool whose disk writes stall (its lock held, as a write to a dying SD card would hold
    /// it) stalls no caller of `record`: the records wait for the spool's thread, and are all
    /// written once the disk answers again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_spool_does_not_stall_the_request_path() {
        let Spooled {
            dir,
            store,
            tenant,
            function,
            recorder,
        } = spooled("stall").await;
        let spool = Arc::clone(recorder.spool.as_ref().expect("a spool"));
        let (stalled_tx, stalled_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let staller = std::thread::spawn(move || {
            let _held = spool.current.lock().expect("the spool's lock");
            stalled_tx.send(()).expect("stalled");
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
        });
        stalled_rx.recv().expect("the disk stalls");
        let result =
            InvocationResult::failed(picloud_shared::Outcome::Ok, Duration::from_millis(1));
        // On a thread of its own, so that a `record` that blocked would be seen, not hang the
        // test: 100 records, each returning at once.
        let caller = {
            let recorder = Arc::clone(&recorder);
            let result = result.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    recorder.record(InvocationRecord::new(
                        tenant,
                        function,
                        1,
                        Trigger::Http,
                        &result,
                    ));
                }
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !caller.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "record() blocked behind the stalled spool"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(recorder.dropped(), 0);
        let one = || InvocationRecord::new(tenant, function, 1, Trigger::Http, &result);
        // A caller that waits for the spool gives up after a bound, and the callers after it,
        // the spool known to be behind, do not wait at all: 50 of them within one bound.
        let waited = std::time::Instant::now();
        recorder.record_spooled(one()).await;
        assert!(waited.elapsed() >= SPOOL_WAIT, "it waited for the spool");
        assert!(recorder.spool_behind.load(Ordering::Acquire));
        let skipped = tokio::time::timeout(SPOOL_WAIT, async {
            for _ in 0..50 {
                recorder.record_spooled(one()).await;
            }
        })
        .await;
        assert!(
            skipped.is_ok(),
            "callers waited for a spool known to be behind"
        );
        release_tx.send(()).expect("release");
        staller.join().expect("staller");
        assert!(recorder.flush(Duration::from_secs(20)).await, "all written");
        // Caught up, the next caller waits for its record again.
        recorder.record_spooled(one()).await;
        assert!(!recorder.spool_behind.load(Ordering::Acquire), "caught up");
        assert!(recorder.flush(Duration::from_secs(20)).await, "all written");
        let filter = RecordFilter {
            limit: 1_000,
            ..RecordFilter::default()
        };
        assert_eq!(
            store
                .records(function, &filter)
                .await
                .expect("records")
                .len(),
            152
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// When `record_spooled` returns, the record is in a spool file: a process killed right
    /// after it answered writes the record when it starts again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spooled_record_is_on_file_when_the_caller_goes_on() {
        let Spooled {
            dir,
            store,
            tenant,
            function,
            recorder,
        } = spooled("spooled").await;
        let result =
            InvocationResult::failed(picloud_shared::Outcome::Ok, Duration::from_millis(1));
        let all = RecordFilter {
            limit: 1_000,
            ..RecordFilter::default()
        };
        for n in 0..20 {
            // The database does not give a record's key back: each is told by its duration.
            let mut record = InvocationRecord::new(tenant, function, 1, Trigger::Http, &result);
            let mark = 1_000 + n;
            record.duration_us = mark;
            recorder.record_spooled(record).await;
            let spooled: Vec<u64> = std::fs::read_dir(dir.join("spool"))
                .expect("spool dir")
                .filter_map(Result::ok)
                .filter_map(|e| spool::read_segment(&e.path()).ok())
                .flatten()
                .map(|r| r.duration_us)
                .collect();
            // A segment is removed only once its records are written: a record not found in
            // the spool must then be in the database.
            let found = spooled.contains(&mark)
                || store
                    .records(function, &all)
                    .await
                    .expect("records")
                    .iter()
                    .any(|r| r.duration_us == mark);
            assert!(
                found,
                "record {n} is neither spooled nor written when record_spooled returned"
            );
        }
        // A caller that goes away while waiting (its client disconnected) loses nothing: the
        // record was queued before the wait.
        let mut record = InvocationRecord::new(tenant, function, 1, Trigger::Http, &result);
        record.duration_us = 999_999;
        let _ = tokio::time::timeout(Duration::ZERO, recorder.record_spooled(record)).await;
        assert!(recorder.flush(Duration::from_secs(20)).await, "all written");
        let written = store.records(function, &all).await.expect("records");
        assert!(
            written.iter().any(|r| r.duration_us == 999_999),
            "the abandoned caller's record was lost"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn sample(at: i64, outcome: &str, ms: u64) -> RecordSample {
        RecordSample {
            at,
            outcome: outcome.to_string(),
            duration_us: ms * 1000,
        }
    }

    #[test]
    fn stats_count_outcomes_and_quantiles_per_bucket() {
        // 100 invocations in the first of two buckets (1..=100 ms, one error), one in the second,
        // one outside the window.
        let mut samples: Vec<RecordSample> = (1..=100)
            .map(|i| sample(i - 1, if i == 7 { "timeout" } else { "ok" }, i as u64))
            .collect();
        samples.push(sample(150, "ok", 500));
        samples.push(sample(200, "ok", 1));
        let s = stats(&samples, 0, 200, 2);
        assert_eq!((s.invocations, s.errors, s.last_at), (101, 1, Some(150)));
        assert_eq!(s.by_outcome.get("timeout"), Some(&1));
        assert_eq!(s.by_outcome.get("ok"), Some(&100));
        assert_eq!((s.p50_ms, s.p99_ms), (Some(51.0), Some(100.0)));
        assert_eq!(s.buckets.len(), 2);
        assert_eq!((s.buckets[0].start, s.buckets[0].invocations), (0, 100));
        assert_eq!(
            (s.buckets[0].p50_ms, s.buckets[0].p99_ms),
            (Some(50.0), Some(99.0))
        );
        assert_eq!((s.buckets[1].start, s.buckets[1].invocations), (100, 1));
        assert_eq!(s.buckets[1].p99_ms, Some(500.0));
        let empty = stats(&[], 0, 60, 3);
        assert_eq!(
            (empty.invocations, empty.p50_ms, empty.buckets.len()),
            (0, None, 3)
        );
    }
}
