//! PiCloud's guest: Rhai compiled to `wasm32-wasip1`.
//!
//! The Rhai `Engine` is built once in [`picloud_init`], which wizer runs when the host fills its
//! module cache; the snapshot therefore starts every invocation with a ready engine (building it
//! costs 0.6–0.9 ms in wasm, ten times the rest of a hello-world invocation). Each invocation is
//! then one call of [`picloud_run`] in a fresh instance. The ABI is described in
//! `picloud_shared::guest`.

use std::cell::RefCell;
use std::collections::BTreeMap;

use picloud_shared::guest::{GuestError, GuestErrorKind, GuestInput, GuestOutput};
use picloud_shared::host::{HostCall, HostReply};
use picloud_shared::nesting::{MAX_NESTING, check_nesting};
use picloud_shared::{InvocationRequest, InvocationResponse, LogLevel, ScriptLimits};
use rhai::{
    Array, CallFnOptions, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position, Scope,
};

mod host {
    #[link(wasm_import_module = "picloud")]
    unsafe extern "C" {
        /// Appends one line to the invocation's log; the host enforces the size cap.
        pub fn log(level: u32, ptr: *const u8, len: usize);
        /// Makes one host call (JSON at `ptr`); returns the length of the reply.
        pub fn call(ptr: *const u8, len: usize) -> usize;
        /// Copies the reply of the last call to `ptr`.
        pub fn reply(ptr: *mut u8, len: usize);
    }

    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        /// WASI's `random_get`: the host fills the buffer from the kernel's generator.
        #[link_name = "random_get"]
        pub fn wasi_random_get(buf: *mut u8, len: usize) -> u16;
    }
}

/// The deepest call nesting the 1 MiB wasm stack (see `build.rs` of executor-core) is sized for.
const MAX_CALL_LEVELS: u32 = picloud_shared::MAX_CALL_LEVELS_CEILING;

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// This invocation's variables and secrets (`env(name)`).
    static ENV: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
}

fn log(level: LogLevel, message: &str) {
    // SAFETY: the host reads `len` bytes at `ptr` from this instance's memory and keeps no
    // reference to them.
    unsafe { host::log(level.to_wire(), message.as_ptr(), message.len()) }
}

fn build_engine() -> Engine {
    let mut engine = Engine::new();
    // No file system: `import` can only name modules the platform offers (none yet).
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.on_print(|s| log(LogLevel::Info, s));
    engine.on_debug(|s, _source, _pos| log(LogLevel::Debug, s));
    engine.register_fn(
        "log",
        |level: ImmutableString, message: Dynamic| -> Result<(), Box<EvalAltResult>> {
            let Some(level) = LogLevel::parse(&level) else {
                return Err(format!(
                    "unknown log level '{level}': use trace, debug, info, warn or error"
                )
                .into());
            };
            log(level, &message.to_string());
            Ok(())
        },
    );
    register_host_functions(&mut engine);
    // Rhai's own `sleep` would block in WASI's `poll_oneoff`, which the host does not offer: an
    // invocation may not wait, it computes and answers. Refused here with the function's name
    // (registered functions take precedence over the standard package's).
    engine.register_fn("sleep", |_: rhai::INT| -> RhaiResult<()> {
        Err(NO_SLEEP.into())
    });
    engine.register_fn("sleep", |_: rhai::FLOAT| -> RhaiResult<()> {
        Err(NO_SLEEP.into())
    });
    engine
}

const NO_SLEEP: &str = "`sleep` is not available: a function may not wait (it runs until it \
                        answers, within its time limit)";

/// Keys per page of `kv_list` (the host caps it too).
const KV_LIST_PAGE: u32 = 1_000;

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// What DESIGN.md §3 offers scripts beyond Rhai itself: the time, randomness, the function's
/// environment and the tenant's key-value store.
fn register_host_functions(engine: &mut Engine) {
    engine.register_fn("env", |name: &str| -> Dynamic {
        ENV.with(|env| {
            env.borrow()
                .get(name)
                .map_or(Dynamic::UNIT, |v| v.clone().into())
        })
    });
    // Milliseconds since the Unix epoch (the host's clock: WASI `clock_time_get`).
    engine.register_fn("now", || -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    });
    // Uniform in [0, 1), from the host kernel's generator: never part of the snapshot, so two
    // invocations never draw the same numbers.
    engine.register_fn("random", || -> f64 {
        let mut bytes = [0u8; 8];
        // SAFETY: the host writes at most 8 bytes into `bytes`.
        unsafe { host::wasi_random_get(bytes.as_mut_ptr(), bytes.len()) };
        (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
    });
    engine.register_fn("kv_get", |key: &str| -> RhaiResult<Dynamic> {
        match host_call(&HostCall::KvGet { key: key.into() })? {
            HostReply::Value { value: None } => Ok(Dynamic::UNIT),
            HostReply::Value { value: Some(json) } => {
                let value: serde_json::Value = serde_json::from_str(&json)
                    .map_err(|e| format!("kv_get: the stored value is not JSON: {e}"))?;
                rhai::serde::to_dynamic(value)
            }
            other => unexpected("kv_get", other),
        }
    });
    engine.register_fn("kv_set", |key: &str, value: Dynamic| -> RhaiResult<()> {
        let value = serde_json::to_string(&value)
            .map_err(|e| format!("kv_set: the value cannot be stored as JSON: {e}"))?;
        match host_call(&HostCall::KvSet {
            key: key.into(),
            value,
        })? {
            HostReply::Done => Ok(()),
            other => unexpected("kv_set", other),
        }
    });
    engine.register_fn("kv_delete", |key: &str| -> RhaiResult<bool> {
        match host_call(&HostCall::KvDelete { key: key.into() })? {
            HostReply::Deleted { existed } => Ok(existed),
            other => unexpected("kv_delete", other),
        }
    });
    engine.register_fn("kv_list", |prefix: &str| kv_list(prefix, None));
    engine.register_fn("kv_list", |prefix: &str, after: &str| {
        kv_list(prefix, Some(after.into()))
    });
}

fn kv_list(prefix: &str, after: Option<String>) -> RhaiResult<Array> {
    match host_call(&HostCall::KvList {
        prefix: prefix.into(),
        after,
        limit: KV_LIST_PAGE,
    })? {
        HostReply::Keys { keys } => Ok(keys.into_iter().map(Dynamic::from).collect()),
        other => unexpected("kv_list", other),
    }
}

fn unexpected<T>(name: &str, reply: HostReply) -> RhaiResult<T> {
    Err(format!("{name}: the host answered {reply:?}").into())
}

/// One round trip to the host. A refusal becomes a Rhai error, so the script sees a clear
/// message with the position of its call (and may catch it).
fn host_call(call: &HostCall) -> RhaiResult<HostReply> {
    let bytes =
        serde_json::to_vec(call).map_err(|e| format!("{}: cannot encode: {e}", call.name()))?;
    // SAFETY: the host reads `bytes` and keeps no reference to them.
    let len = unsafe { host::call(bytes.as_ptr(), bytes.len()) };
    let mut reply = vec![0u8; len];
    // SAFETY: the host writes exactly `len` bytes, the length it just returned.
    unsafe { host::reply(reply.as_mut_ptr(), reply.len()) };
    match serde_json::from_slice(&reply) {
        Ok(HostReply::Error { message }) => Err(format!("{}: {message}", call.name()).into()),
        Ok(reply) => Ok(reply),
        Err(e) => Err(format!("{}: unreadable answer from the host: {e}", call.name()).into()),
    }
}

/// Builds the engine into the snapshot. Run by wizer, never at invocation time.
#[unsafe(export_name = "picloud_init")]
pub extern "C" fn picloud_init() {
    let engine = build_engine();
    // One representative invocation, so that what Rhai and std initialise lazily on first use
    // (function hashes, hasher keys, caches) is in the snapshot too, not redone every time.
    let request = InvocationRequest {
        method: "GET".into(),
        path: "/".into(),
        body: "{\"warm\":[1,2.5,true,null]}".into(),
        ..InvocationRequest::default()
    };
    let _ = handle(
        &engine,
        "const G = 1; let x = [1, 2]; x.push(#{ a: 1 }); \
         fn handle(req) { let n = req.query.name ?? \"w\"; print(`${n} ${global::G}`); \
         #{ status: 200, headers: #{ \"x\": \"y\" }, body: `${req.path} ${req.json}` } }",
        Entry::Http(request),
    );
    ENGINE.with(|e| *e.borrow_mut() = Some(engine));
}

/// Hands the host a buffer for the invocation's input. Leaked on purpose: the instance lives
/// for exactly one invocation.
#[unsafe(export_name = "picloud_alloc")]
pub extern "C" fn picloud_alloc(len: usize) -> *mut u8 {
    Box::leak(vec![0u8; len].into_boxed_slice()).as_mut_ptr()
}

/// Runs one invocation; see `picloud_shared::guest` for the ABI.
#[unsafe(export_name = "picloud_run")]
pub extern "C" fn picloud_run(ptr: *const u8, len: usize) -> u64 {
    // SAFETY: the host wrote `len` bytes at `ptr`, a buffer it got from `picloud_alloc`.
    let input = unsafe { std::slice::from_raw_parts(ptr, len) };
    let output = match serde_json::from_slice::<GuestInput>(input) {
        Ok(input) => run(input),
        Err(e) => GuestOutput::Error(GuestError {
            kind: GuestErrorKind::Internal,
            message: format!("guest could not read its input: {e}"),
            line: None,
            column: None,
        }),
    };
    OUTPUT.with(|out| {
        let mut out = out.borrow_mut();
        out.clear();
        if serde_json::to_writer(&mut *out, &output).is_err() {
            out.clear();
            out.extend_from_slice(
                br#"{"result":"error","kind":"internal","message":"guest could not encode its output","line":null,"column":null}"#,
            );
        }
        ((out.as_ptr() as u64) << 32) | out.len() as u64
    })
}

fn run(input: GuestInput) -> GuestOutput {
    ENGINE.with(|engine| {
        let mut engine = engine.borrow_mut();
        let engine = engine.get_or_insert_with(build_engine);
        apply_limits(engine, &input.limits);
        ENV.with(|env| *env.borrow_mut() = input.env);
        let entry = match input.event {
            Some(event) => Entry::Schedule(event),
            None => Entry::Http(input.request),
        };
        match handle(engine, &input.script, entry) {
            Ok(response) => GuestOutput::Response(response),
            Err(error) => GuestOutput::Error(error),
        }
    })
}

fn apply_limits(engine: &mut Engine, limits: &ScriptLimits) {
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels.min(MAX_CALL_LEVELS) as usize);
    engine.set_max_expr_depths(
        limits.max_expr_depth as usize,
        limits.max_function_expr_depth as usize,
    );
    engine.set_max_string_size(limits.max_string_bytes as usize);
    engine.set_max_array_size(limits.max_array_len as usize);
    engine.set_max_map_size(limits.max_map_len as usize);
}

/// Which of the script's entry points an invocation calls.
enum Entry {
    /// `handle(req)` with an HTTP request.
    Http(InvocationRequest),
    /// `on_schedule(event)` with a schedule's tick (JSON).
    Schedule(String),
}

fn handle(engine: &Engine, script: &str, entry: Entry) -> Result<InvocationResponse, GuestError> {
    // Before Rhai's parser, which recurses once per level: a clear error with its position
    // rather than a trap on the wasm stack (see `picloud_shared::nesting`).
    check_nesting(script, MAX_NESTING).map_err(|e| GuestError {
        // Nesting too deep is `stack_overflow`, as when Rhai's own expression depth refuses.
        kind: GuestErrorKind::StackOverflow,
        message: e.to_string(),
        line: Some(e.line),
        column: Some(e.column),
    })?;
    let ast = engine.compile(script).map_err(|e| {
        let (line, column) = position(e.position());
        let kind = if matches!(*e.0, rhai::ParseErrorType::ExprTooDeep) {
            GuestErrorKind::StackOverflow
        } else {
            GuestErrorKind::Script
        };
        GuestError {
            kind,
            message: e.err_type().to_string(),
            line,
            column,
        }
    })?;
    let (name, signature, argument) = match entry {
        Entry::Http(request) => ("handle", "fn handle(req)", request_to_dynamic(request)),
        Entry::Schedule(event) => (
            "on_schedule",
            "fn on_schedule(event)",
            serde_json::from_str::<serde_json::Value>(&event)
                .ok()
                .and_then(|v| rhai::serde::to_dynamic(v).ok())
                .ok_or_else(|| GuestError {
                    kind: GuestErrorKind::Internal,
                    message: "the schedule event is not JSON".into(),
                    line: None,
                    column: None,
                })?,
        ),
    };
    if !ast
        .iter_functions()
        .any(|f| f.name == name && f.params.len() == 1)
    {
        return Err(GuestError {
            kind: GuestErrorKind::Script,
            message: format!("the script must define `{signature}`"),
            line: None,
            column: None,
        });
    }
    let mut scope = Scope::new();
    let options = CallFnOptions::new().eval_ast(true).rewind_scope(true);
    let value: Dynamic = engine
        .call_fn_with_options(options, &mut scope, &ast, name, (argument,))
        .map_err(|e| eval_error(&e))?;
    to_response(value)
}

fn position(pos: Position) -> (Option<u32>, Option<u32>) {
    (
        pos.line().map(|l| l as u32),
        pos.position().map(|c| c as u32),
    )
}

/// Classifies an evaluation error by its innermost cause, which also carries the most useful
/// position (the failing statement inside the function, not the call site).
fn eval_error(err: &EvalAltResult) -> GuestError {
    let mut err = err;
    while let EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
    | EvalAltResult::ErrorInModule(_, inner, _) = err
    {
        err = inner;
    }
    let kind = match err {
        EvalAltResult::ErrorTooManyOperations(_) => GuestErrorKind::Operations,
        EvalAltResult::ErrorDataTooLarge(..) => GuestErrorKind::DataTooLarge,
        EvalAltResult::ErrorStackOverflow(_) => GuestErrorKind::StackOverflow,
        EvalAltResult::ErrorParsing(rhai::ParseErrorType::ExprTooDeep, _) => {
            GuestErrorKind::StackOverflow
        }
        _ => GuestErrorKind::Script,
    };
    let pos = err.position();
    let mut message = err.to_string();
    if !pos.is_none() {
        // Display appends " (line L, position C)"; the position travels separately.
        let suffix = format!(" ({pos})");
        if message.ends_with(&suffix) {
            message.truncate(message.len() - suffix.len());
        }
    }
    let (line, column) = position(pos);
    GuestError {
        kind,
        message,
        line,
        column,
    }
}

fn script_error(message: String) -> GuestError {
    GuestError {
        kind: GuestErrorKind::Script,
        message,
        line: None,
        column: None,
    }
}

fn request_to_dynamic(req: InvocationRequest) -> Dynamic {
    let json = if req.body.is_empty() {
        Dynamic::UNIT
    } else {
        serde_json::from_str::<serde_json::Value>(&req.body)
            .ok()
            .and_then(|v| rhai::serde::to_dynamic(v).ok())
            .unwrap_or(Dynamic::UNIT)
    };
    let strings = |m: std::collections::BTreeMap<String, String>| -> Dynamic {
        let map: Map = m.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        map.into()
    };
    let mut map = Map::new();
    map.insert("method".into(), req.method.into());
    map.insert("path".into(), req.path.into());
    map.insert("query".into(), strings(req.query));
    map.insert("headers".into(), strings(req.headers));
    map.insert("body".into(), req.body.into());
    map.insert("json".into(), json);
    map.into()
}

fn to_json(value: &Dynamic) -> Result<String, GuestError> {
    serde_json::to_string(value)
        .map_err(|e| script_error(format!("the returned value cannot be sent as JSON: {e}")))
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Turns what `handle` returned into a response (DESIGN.md §3): a string is `200 text/plain`; a
/// map with `status` is a full response; anything else is `200 application/json`.
fn to_response(value: Dynamic) -> Result<InvocationResponse, GuestError> {
    let mut headers = std::collections::BTreeMap::new();
    if value.is_string() {
        headers.insert("content-type".to_string(), TEXT.to_string());
        return Ok(InvocationResponse {
            status: 200,
            headers,
            body: value.into_string().unwrap_or_default(),
        });
    }
    if value.is_map()
        && value
            .read_lock::<Map>()
            .is_some_and(|m| m.contains_key("status"))
    {
        let map = value.cast::<Map>();
        return full_response(map);
    }
    headers.insert("content-type".to_string(), JSON.to_string());
    Ok(InvocationResponse {
        status: 200,
        headers,
        body: to_json(&value)?,
    })
}

fn full_response(mut map: Map) -> Result<InvocationResponse, GuestError> {
    let status = map.remove("status").unwrap_or(Dynamic::UNIT);
    let status = match status.as_int() {
        Ok(s) if (200..=599).contains(&s) => s as u16,
        Ok(s) => {
            return Err(script_error(format!(
                "`status` must be an integer from 200 to 599, not {s}"
            )));
        }
        Err(_) if status.is_string() => {
            return Err(script_error(format!(
                "`status` must be an integer from 200 to 599, not the string {:?}: write it \
                 without quotes",
                status.to_string()
            )));
        }
        Err(kind) => {
            return Err(script_error(format!(
                "`status` must be an integer from 200 to 599, not a value of type {kind}"
            )));
        }
    };
    let mut headers = std::collections::BTreeMap::new();
    match map.remove("headers") {
        None => {}
        Some(h) if h.is_unit() => {}
        Some(h) => {
            let Some(h) = h.try_cast::<Map>() else {
                return Err(script_error("`headers` must be an object map".into()));
            };
            for (name, value) in h {
                let value = value.to_string();
                if name.is_empty() || !name.bytes().all(is_token_byte) {
                    return Err(script_error(format!("invalid header name {name:?}")));
                }
                if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    return Err(script_error(format!(
                        "header {name:?} has a line break or NUL in its value"
                    )));
                }
                headers.insert(name.to_ascii_lowercase(), value);
            }
        }
    }
    let body = map.remove("body").unwrap_or(Dynamic::UNIT);
    let body = if body.is_unit() {
        String::new()
    } else if body.is_string() {
        headers
            .entry("content-type".into())
            .or_insert_with(|| TEXT.into());
        body.into_string().unwrap_or_default()
    } else {
        headers
            .entry("content-type".into())
            .or_insert_with(|| JSON.into());
        to_json(&body)?
    };
    Ok(InvocationResponse {
        status,
        headers,
        body,
    })
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
