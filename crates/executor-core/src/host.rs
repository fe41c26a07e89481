//! What both isolation modes share: the per-invocation store state (memory limiter, log
//! buffer), the imports the guest gets (PiCloud's `log` and a WASI preview 1 shim that grants
//! nothing), running one invocation in an instance, and turning what happened into an
//! [`Outcome`].

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use picloud_shared::guest::{
    EXPORT_ALLOC, EXPORT_MEMORY, EXPORT_RUN, GuestErrorKind, GuestOutput, IMPORT_CALL, IMPORT_LOG,
    IMPORT_MODULE, IMPORT_REPLY,
};
use picloud_shared::host::{
    HostCall, HostCalls, HostReply, MAX_CALL_BYTES, MAX_HOST_CALLS, MAX_REPLY_BYTES,
};
use picloud_shared::{InvocationResponse, InvocationResult, Limits, LogLevel, LogLine, Outcome};
use wasmtime::{Caller, Engine, Instance, Linker, Module, ResourceLimiter, Store, Trap};

/// Largest table the guest may grow to; it never grows its table in practice.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// State of one store, i.e. one invocation.
pub(crate) struct HostState {
    pub memory: MemoryLimiter,
    pub logs: LogBuffer,
    /// Where this invocation's host calls go; `None` answers each with an error.
    pub link: Option<Box<dyn HostLink>>,
    /// The reply to the last host call, until the guest copies it out.
    reply: Vec<u8>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("memory", &self.memory)
            .field("logs", &self.logs)
            .field("link", &self.link.is_some())
            .finish_non_exhaustive()
    }
}

impl HostState {
    pub fn new(memory_limit: u64, max_log_bytes: u32) -> Self {
        Self {
            link: None,
            reply: Vec::new(),
            memory: MemoryLimiter {
                limit: memory_limit,
                peak: 0,
                refused: None,
            },
            logs: LogBuffer {
                lines: Vec::new(),
                bytes: 0,
                cap: max_log_bytes as usize,
                truncated: false,
            },
        }
    }
}

/// A store for one invocation, its memory limiter installed. `memory_limit` and
/// `max_log_bytes` may be tightened later by [`arm_store`].
pub(crate) fn new_store(
    engine: &Engine,
    memory_limit: u64,
    max_log_bytes: u32,
) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(memory_limit, max_log_bytes));
    store.limiter(|s| &mut s.memory);
    store
}

/// Carries a guest's host calls to whoever answers them: the server over a worker's channel
/// (process mode) or the invocation's [`HostCalls`] directly (instance mode). Synchronous: the
/// guest waits for the answer.
pub(crate) trait HostLink: Send {
    /// `call` is a [`HostCall`] as the guest encoded it; returns a [`HostReply`], encoded.
    fn call(&mut self, call: &[u8]) -> Vec<u8>;
}

/// The server side of host calls for one invocation: decodes each call, counts it against
/// [`MAX_HOST_CALLS`] and hands it to the invocation's [`HostCalls`]. Everything the guest
/// sends is untrusted, also the worker's framing around it.
pub(crate) struct CallBudget {
    host: Option<Arc<dyn HostCalls>>,
    made: u32,
}

impl CallBudget {
    pub fn new(host: Option<Arc<dyn HostCalls>>) -> Self {
        Self { host, made: 0 }
    }

    pub async fn answer(&mut self, call: &[u8]) -> Vec<u8> {
        self.made = self.made.saturating_add(1);
        let reply = if self.made > MAX_HOST_CALLS {
            HostReply::error(format!(
                "an invocation may make at most {MAX_HOST_CALLS} host calls"
            ))
        } else if call.len() > MAX_CALL_BYTES {
            HostReply::error(format!(
                "the call is {} bytes; the limit is {MAX_CALL_BYTES}",
                call.len()
            ))
        } else {
            match (serde_json::from_slice::<HostCall>(call), &self.host) {
                (Err(e), _) => HostReply::error(format!("malformed host call: {e}")),
                (Ok(_), None) => {
                    HostReply::error("host functions are not available to this invocation")
                }
                (Ok(call), Some(host)) => host.call(call).await,
            }
        };
        encode_reply(&reply)
    }
}

pub(crate) fn encode_reply(reply: &HostReply) -> Vec<u8> {
    let bytes = serde_json::to_vec(reply).unwrap_or_default();
    if bytes.len() > MAX_REPLY_BYTES {
        return encode_reply(&HostReply::error("the answer is too large"));
    }
    bytes
}

/// Enforces the memory limit and remembers *why* it refused: the trap it causes is a plain
/// error, not a [`Trap`], so without this record a memory bomb would look like an internal
/// failure.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    pub limit: u64,
    pub peak: u64,
    pub refused: Option<u64>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.limit {
            self.refused = Some(desired);
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes reached (wanted {desired})",
                self.limit
            ));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Log lines of one invocation, capped in bytes; what does not fit is dropped and flagged.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    lines: Vec<LogLine>,
    bytes: usize,
    cap: usize,
    truncated: bool,
}

impl LogBuffer {
    pub fn push(&mut self, level: LogLevel, message: &[u8]) {
        if self.truncated {
            return;
        }
        let room = self.cap.saturating_sub(self.bytes);
        let mut message = String::from_utf8_lossy(message).into_owned();
        if message.len() > room {
            self.truncated = true;
            message.truncate(message.floor_char_boundary(room));
            if message.is_empty() {
                return;
            }
        }
        self.bytes += message.len();
        self.lines.push(LogLine { level, message });
    }

    pub fn set_cap(&mut self, cap: u32) {
        self.cap = cap as usize;
    }

    pub fn take(&mut self) -> (Vec<LogLine>, bool) {
        (std::mem::take(&mut self.lines), self.truncated)
    }
}

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const WASI: &str = "wasi_snapshot_preview1";

/// The guest's imports. Anything the guest imports beyond these traps when called.
pub(crate) fn linker(engine: &Engine, module: &Module) -> wasmtime::Result<Linker<HostState>> {
    let mut l = Linker::new(engine);
    l.func_wrap(
        IMPORT_MODULE,
        IMPORT_LOG,
        |mut caller: Caller<'_, HostState>,
         level: u32,
         ptr: u32,
         len: u32|
         -> wasmtime::Result<()> {
            let memory = memory(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let bytes =
                slice(data, ptr, len).ok_or_else(|| wasmtime::format_err!("log: bad pointer"))?;
            state.logs.push(LogLevel::from_wire(level), bytes);
            Ok(())
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        IMPORT_CALL,
        |mut caller: Caller<'_, HostState>, ptr: u32, len: u32| -> wasmtime::Result<u32> {
            let memory = memory(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let call =
                slice(data, ptr, len).ok_or_else(|| wasmtime::format_err!("call: bad pointer"))?;
            state.reply = match &mut state.link {
                Some(link) => link.call(call),
                None => encode_reply(&HostReply::error(
                    "host functions are not available to this invocation",
                )),
            };
            Ok(state.reply.len() as u32)
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        IMPORT_REPLY,
        |mut caller: Caller<'_, HostState>, ptr: u32, len: u32| -> wasmtime::Result<()> {
            let memory = memory(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let reply = std::mem::take(&mut state.reply);
            if reply.len() != len as usize {
                return Err(wasmtime::format_err!("reply: wrong length"));
            }
            slice_mut(data, ptr, len)
                .ok_or_else(|| wasmtime::format_err!("reply: bad pointer"))?
                .copy_from_slice(&reply);
            Ok(())
        },
    )?;
    // Standard output and error become log lines (a guest panic message lands here).
    l.func_wrap(
        WASI,
        "fd_write",
        |mut caller: Caller<'_, HostState>,
         fd: i32,
         iovs: u32,
         iovs_len: u32,
         nwritten: u32|
         -> wasmtime::Result<i32> {
            let level = match fd {
                1 => LogLevel::Info,
                2 => LogLevel::Error,
                _ => return Ok(ERRNO_BADF),
            };
            let memory = memory(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let mut text = Vec::new();
            for i in 0..iovs_len {
                let Some(iov) = slice(data, iovs.wrapping_add(i * 8), 8) else {
                    return Ok(ERRNO_FAULT);
                };
                let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let Some(bytes) = slice(data, ptr, len) else {
                    return Ok(ERRNO_FAULT);
                };
                text.extend_from_slice(bytes);
            }
            let written = text.len() as u32;
            let trimmed = text.strip_suffix(b"\n").unwrap_or(&text);
            if !trimmed.is_empty() {
                state.logs.push(level, trimmed);
            }
            Ok(write_u32(data, nwritten, written))
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        l.func_wrap(
            WASI,
            name,
            |mut caller: Caller<'_, HostState>, count: u32, size: u32| -> wasmtime::Result<i32> {
                let memory = memory(&mut caller)?;
                let data = memory.data_mut(&mut caller);
                let r = write_u32(data, count, 0);
                Ok(if r == ERRNO_SUCCESS {
                    write_u32(data, size, 0)
                } else {
                    r
                })
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        l.func_wrap(WASI, name, |_: u32, _: u32| -> i32 { ERRNO_SUCCESS })?;
    }
    l.func_wrap(
        WASI,
        "clock_time_get",
        |mut caller: Caller<'_, HostState>,
         id: u32,
         _precision: u64,
         out: u32|
         -> wasmtime::Result<i32> {
            let nanos = match id {
                // realtime, monotonic, process and thread CPU time: wall time is enough for all.
                0..=3 => coarse_now_nanos(),
                _ => return Ok(ERRNO_INVAL),
            };
            let memory = memory(&mut caller)?;
            let data = memory.data_mut(&mut caller);
            Ok(match slice_mut(data, out, 8) {
                Some(dst) => {
                    dst.copy_from_slice(&nanos.to_le_bytes());
                    ERRNO_SUCCESS
                }
                None => ERRNO_FAULT,
            })
        },
    )?;
    l.func_wrap(
        WASI,
        "random_get",
        |mut caller: Caller<'_, HostState>, buf: u32, len: u32| -> wasmtime::Result<i32> {
            let memory = memory(&mut caller)?;
            let data = memory.data_mut(&mut caller);
            Ok(match slice_mut(data, buf, len) {
                Some(dst) => {
                    fill_random(dst);
                    ERRNO_SUCCESS
                }
                None => ERRNO_FAULT,
            })
        },
    )?;
    l.func_wrap(WASI, "proc_exit", |code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::format_err!("the guest exited with code {code}"))
    })?;
    l.func_wrap(WASI, "sched_yield", || -> i32 { ERRNO_SUCCESS })?;
    l.func_wrap(
        WASI,
        "clock_res_get",
        |mut caller: Caller<'_, HostState>, id: u32, out: u32| -> wasmtime::Result<i32> {
            if id > 3 {
                return Ok(ERRNO_INVAL);
            }
            let memory = memory(&mut caller)?;
            let data = memory.data_mut(&mut caller);
            Ok(match slice_mut(data, out, 8) {
                Some(dst) => {
                    dst.copy_from_slice(&CLOCK_RESOLUTION_NANOS.to_le_bytes());
                    ERRNO_SUCCESS
                }
                None => ERRNO_FAULT,
            })
        },
    )?;
    // No descriptors exist: every other file call answers EBADF, which also tells the guest's
    // libstd that there are no preopened directories.
    l.func_wrap(WASI, "fd_close", |_: i32| -> i32 { ERRNO_BADF })?;
    l.func_wrap(WASI, "fd_fdstat_get", |_: i32, _: u32| -> i32 {
        ERRNO_BADF
    })?;
    l.func_wrap(WASI, "fd_prestat_get", |_: i32, _: u32| -> i32 {
        ERRNO_BADF
    })?;
    l.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |_: i32, _: u32, _: u32| -> i32 { ERRNO_BADF },
    )?;
    l.func_wrap(WASI, "fd_seek", |_: i32, _: i64, _: i32, _: u32| -> i32 {
        ERRNO_BADF
    })?;
    l.func_wrap(WASI, "fd_read", |_: i32, _: u32, _: u32, _: u32| -> i32 {
        ERRNO_BADF
    })?;
    l.func_wrap(WASI, "fd_filestat_get", |_: i32, _: u32| -> i32 {
        ERRNO_BADF
    })?;
    l.func_wrap(
        WASI,
        "path_open",
        |_: i32, _: i32, _: u32, _: u32, _: i32, _: i64, _: i64, _: i32, _: u32| -> i32 {
            ERRNO_BADF
        },
    )?;
    // Anything else the guest imports (WASI's `poll_oneoff`, which `sleep` would need, say)
    // traps with wasmtime's `UnknownImportError`, which `trap_outcome` turns into a
    // `script_error` naming it: the script asked for something the platform does not offer.
    l.define_unknown_imports_as_traps(module)?;
    Ok(l)
}

/// Every clock a script can read has a resolution of one millisecond (`now()`, Rhai's
/// `timestamp()` and `.elapsed`). A finer clock lets a script that spins on it see when it
/// loses the CPU, that is when another tenant's invocation runs on its core; a millisecond is
/// what `now()` always promised (docs/security.md).
pub(crate) const CLOCK_RESOLUTION_NANOS: u64 = 1_000_000;

fn coarse_now_nanos() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos - nanos % CLOCK_RESOLUTION_NANOS
}

fn memory(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<wasmtime::Memory> {
    caller
        .get_export(EXPORT_MEMORY)
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::format_err!("the guest exports no memory"))
}

fn slice(data: &[u8], ptr: u32, len: u32) -> Option<&[u8]> {
    data.get(ptr as usize..(ptr as usize).checked_add(len as usize)?)
}

fn slice_mut(data: &mut [u8], ptr: u32, len: u32) -> Option<&mut [u8]> {
    data.get_mut(ptr as usize..(ptr as usize).checked_add(len as usize)?)
}

fn write_u32(data: &mut [u8], ptr: u32, value: u32) -> i32 {
    match slice_mut(data, ptr, 4) {
        Some(dst) => {
            dst.copy_from_slice(&value.to_le_bytes());
            ERRNO_SUCCESS
        }
        None => ERRNO_FAULT,
    }
}

fn fill_random(dst: &mut [u8]) {
    let mut filled = 0;
    while filled < dst.len() {
        let rest = &mut dst[filled..];
        // SAFETY: writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n <= 0 {
            // getrandom(2) cannot fail for small requests once the pool is initialised; if
            // it ever does, the guest gets zeros rather than a crash (it only seeds hashing).
            rest.fill(0);
            return;
        }
        filled += n as usize;
    }
}

/// Prepares a store for one invocation: fuel and limits.
pub(crate) fn arm_store(store: &mut Store<HostState>, limits: &Limits) -> wasmtime::Result<()> {
    if store.engine().get_consume_fuel() {
        store.set_fuel(limits.fuel)?;
    }
    let state = store.data_mut();
    state.memory.limit = limits.memory_bytes;
    state.logs.set_cap(limits.max_log_bytes);
    Ok(())
}

/// Runs one invocation in a fresh instance whose store was prepared by [`arm_store`]. The
/// `input` is the JSON of a [`picloud_shared::guest::GuestInput`].
pub(crate) fn run(
    store: &mut Store<HostState>,
    instance: &Instance,
    input: &[u8],
) -> wasmtime::Result<GuestOutput> {
    let alloc = instance.get_typed_func::<u32, u32>(&mut *store, EXPORT_ALLOC)?;
    let run = instance.get_typed_func::<(u32, u32), u64>(&mut *store, EXPORT_RUN)?;
    let memory = instance
        .get_memory(&mut *store, EXPORT_MEMORY)
        .ok_or_else(|| wasmtime::format_err!("the guest exports no memory"))?;
    let len = u32::try_from(input.len())?;
    let ptr = alloc.call(&mut *store, len)?;
    memory.write(&mut *store, ptr as usize, input)?;
    let packed = run.call(&mut *store, (ptr, len))?;
    let (out_ptr, out_len) = ((packed >> 32) as u32, packed as u32);
    let out = slice(memory.data(&*store), out_ptr, out_len)
        .ok_or_else(|| wasmtime::format_err!("the guest returned a bad output pointer"))?;
    Ok(serde_json::from_slice(out)?)
}

/// Everything the executor reports about a finished run in `store`.
pub(crate) fn finish(
    store: &mut Store<HostState>,
    result: wasmtime::Result<GuestOutput>,
    limits: &Limits,
    started: Instant,
) -> InvocationResult {
    let fuel_used = match store.get_fuel() {
        Ok(left) => limits.fuel.saturating_sub(left),
        Err(_) => 0, // fuel is not metered on this engine
    };
    let (outcome, response) = outcome(result, store.data(), limits);
    let state = store.data_mut();
    let (logs, logs_truncated) = state.logs.take();
    InvocationResult {
        outcome,
        response,
        duration_us: started.elapsed().as_micros() as u64,
        wait_us: 0,
        fuel_used,
        peak_memory_bytes: state.memory.peak,
        logs,
        logs_truncated,
    }
}

/// The outcome and response of a finished run.
fn outcome(
    result: wasmtime::Result<GuestOutput>,
    state: &HostState,
    limits: &Limits,
) -> (Outcome, Option<InvocationResponse>) {
    let output = match result {
        Ok(output) => output,
        Err(err) => return (trap_outcome(&err, state, limits), None),
    };
    match output {
        GuestOutput::Response(response) => (Outcome::Ok, Some(response)),
        GuestOutput::Error(e) => {
            let at = match (e.line, e.column) {
                (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
                _ => String::new(),
            };
            let outcome = match e.kind {
                GuestErrorKind::Script => Outcome::ScriptError {
                    message: e.message,
                    line: e.line,
                    column: e.column,
                },
                GuestErrorKind::Operations => Outcome::FuelExhausted {
                    message: format!(
                        "the script used more than {} Rhai operations{at}",
                        limits.script.max_operations
                    ),
                },
                GuestErrorKind::DataTooLarge => Outcome::MemoryLimit {
                    message: format!("{}{at}", e.message),
                },
                GuestErrorKind::StackOverflow => Outcome::StackOverflow {
                    message: format!("{}{at}", e.message),
                },
                GuestErrorKind::Internal => Outcome::Internal { message: e.message },
            };
            (outcome, None)
        }
    }
}

fn trap_outcome(err: &wasmtime::Error, state: &HostState, limits: &Limits) -> Outcome {
    if let Some(wanted) = state.memory.refused {
        return Outcome::MemoryLimit {
            message: format!(
                "the script needed {} MiB of memory; the limit is {} MiB",
                wanted.div_ceil(1 << 20),
                limits.memory_bytes >> 20
            ),
        };
    }
    if let Some(unknown) = err.downcast_ref::<wasmtime::UnknownImportError>() {
        return Outcome::ScriptError {
            message: format!(
                "the script called something PiCloud does not offer to scripts (the guest's \
                 import `{}::{}`)",
                unknown.module(),
                unknown.name()
            ),
            line: None,
            column: None,
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Outcome::FuelExhausted {
            message: format!("the script used all of its {} fuel", limits.fuel),
        },
        Some(Trap::StackOverflow) => Outcome::StackOverflow {
            message: "the script exhausted the wasm stack".into(),
        },
        Some(Trap::Interrupt) => Outcome::Timeout {
            limit_ms: limits.timeout_ms,
        },
        Some(trap) => Outcome::Internal {
            message: format!("the guest trapped: {trap}"),
        },
        None => Outcome::Internal {
            message: format!("{err:#}"),
        },
    }
}
