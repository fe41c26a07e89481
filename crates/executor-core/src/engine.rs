//! The wasmtime `Engine` for each isolation mode, and the compiled guest: snapshotted with
//! wizer, compiled with Cranelift and serialized to the module cache once per host, then loaded
//! with `Module::deserialize_file` (an mmap, ~0.4 ms) on every later start.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use picloud_shared::guest::EXPORT_INIT;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Module, OptLevel, PoolingAllocationConfig, Store,
};
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

use crate::error::ExecutorError;
use crate::host::{self, HostState};
use crate::{ExecutorConfig, GUEST_SHA256, GUEST_WASM, Isolation};

/// Native stack wasm frames may use (wasmtime caps it at its async stack size, 2 MiB, even
/// without async). Rhai at 128 call levels needs well under this; the threads
/// that run wasm have 8 MiB stacks.
pub(crate) const MAX_WASM_STACK: usize = 2 << 20;

/// Builds the engine of one isolation mode. Process mode uses the on-demand allocator (the
/// pooling allocator's reservation makes each fork ten times slower) and no epochs (a forked
/// worker has no ticker thread; its deadline is a SIGKILL from outside). Instance mode uses the
/// pooling allocator and epoch interruption.
pub(crate) fn engine(
    config: &ExecutorConfig,
    isolation: Isolation,
) -> Result<Engine, ExecutorError> {
    let mut c = Config::new();
    c.consume_fuel(config.consume_fuel)
        .cranelift_opt_level(OptLevel::Speed)
        .max_wasm_stack(MAX_WASM_STACK)
        .parallel_compilation(true);
    match isolation {
        Isolation::Process => {
            c.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        }
        Isolation::Instance => {
            let slots = (config.instance.threads.max(1) * 2) as u32;
            let mut pool = PoolingAllocationConfig::default();
            pool.total_core_instances(slots)
                .total_memories(slots)
                .total_tables(slots)
                .max_memories_per_module(1)
                .max_memory_size(config.max_memory_bytes as usize)
                // Reset a slot by restoring only its dirty pages (found with PAGEMAP_SCAN on
                // Linux 6.7+) instead of madvise: the pages stay resident, so the next
                // invocation takes no page faults and no TLB shootdowns.
                .linear_memory_keep_resident(16 << 20)
                .table_keep_resident(1 << 20)
                .pagemap_scan(wasmtime::Enabled::Auto);
            c.epoch_interruption(true)
                .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
    }
    Engine::new(&c).map_err(ExecutorError::guest)
}

/// The guest module, loaded from (or freshly written to) the module cache.
#[derive(Debug)]
pub(crate) struct GuestModule {
    pub module: Module,
    pub path: PathBuf,
}

/// Loads the compiled guest for `engine` from `cache_dir`, compiling and caching it first if no
/// usable file is there. Concurrent processes may race to fill the cache; each writes a private
/// temporary file and renames it into place, so a reader never sees half a file.
pub(crate) fn load_guest(
    engine: &Engine,
    isolation: Isolation,
    cache_dir: &Path,
) -> Result<GuestModule, ExecutorError> {
    let path = cache_dir.join(format!(
        "guest-{}-{}.cwasm",
        isolation.as_str(),
        cache_key(engine)
    ));
    if path.exists() {
        // SAFETY: the cache directory is the operator's and holds only files this function
        // wrote with `Module::serialize` (documented on `ExecutorConfig::cache_dir`).
        match unsafe { Module::deserialize_file(engine, &path) } {
            Ok(module) => return Ok(GuestModule { module, path }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "module cache entry unusable; recompiling")
            }
        }
    }
    let cache_err = |source| ExecutorError::Cache {
        path: cache_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(cache_dir).map_err(cache_err)?;
    let started = std::time::Instant::now();
    {
        let snapshot = snapshot(engine, GUEST_WASM, isolation == Isolation::Instance)?;
        let module = Module::new(engine, &snapshot).map_err(ExecutorError::guest)?;
        let bytes = module.serialize().map_err(ExecutorError::guest)?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(cache_err)?;
        std::fs::rename(&tmp, &path).map_err(cache_err)?;
    }
    release_freed_memory();
    tracing::info!(
        path = %path.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "compiled the guest into the module cache"
    );
    // SAFETY: as above; the file was just written by `Module::serialize`.
    let module =
        unsafe { Module::deserialize_file(engine, &path) }.map_err(ExecutorError::guest)?;
    Ok(GuestModule { module, path })
}

/// Compiling the guest allocates tens of MB that glibc keeps after they are freed (a server that
/// filled the cache measured 95 MiB RSS against 18 MiB for one started on a filled cache); hand
/// them back so that the long-lived process does not carry them.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Guest bytes + every engine setting that affects compiled code.
fn cache_key(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    GUEST_SHA256.hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Runs the guest's `picloud_init` under wizer and returns the pre-initialised module, in which
/// Rhai's `Engine` is already built.
pub(crate) fn snapshot(
    engine: &Engine,
    wasm: &[u8],
    epochs: bool,
) -> Result<Vec<u8>, ExecutorError> {
    let mut wizer = Wizer::new();
    wizer.init_func(EXPORT_INIT);
    let (cx, instrumented) = wizer.instrument(wasm).map_err(ExecutorError::guest)?;
    let module = Module::new(engine, &instrumented).map_err(ExecutorError::guest)?;
    let linker = host::linker(engine, &module).map_err(ExecutorError::guest)?;
    let mut store = host::new_store(engine, u64::MAX, 0);
    if engine.get_consume_fuel() {
        store.set_fuel(u64::MAX).map_err(ExecutorError::guest)?;
    }
    if epochs {
        store.set_epoch_deadline(u64::MAX);
    }
    let instance = linker
        .instantiate(&mut store, &module)
        .map_err(ExecutorError::guest)?;
    for init in ["_initialize", EXPORT_INIT] {
        if let Ok(f) = instance.get_typed_func::<(), ()>(&mut store, init) {
            f.call(&mut store, ()).map_err(ExecutorError::guest)?;
        }
    }
    let mut state = Snapshotting {
        store: &mut store,
        instance,
    };
    block_on(wizer.snapshot(&cx, &mut state)).map_err(ExecutorError::guest)
}

struct Snapshotting<'a> {
    store: &'a mut Store<HostState>,
    instance: wasmtime::Instance,
}

impl InstanceState for Snapshotting<'_> {
    fn global_get(&mut self, name: &str, _: ValType) -> impl Future<Output = SnapshotVal> + Send {
        let value = match self
            .instance
            .get_global(&mut *self.store, name)
            .map(|g| g.get(&mut *self.store))
        {
            Some(wasmtime::Val::I32(x)) => SnapshotVal::I32(x),
            Some(wasmtime::Val::I64(x)) => SnapshotVal::I64(x),
            Some(wasmtime::Val::F32(x)) => SnapshotVal::F32(x),
            Some(wasmtime::Val::F64(x)) => SnapshotVal::F64(x),
            Some(wasmtime::Val::V128(x)) => SnapshotVal::V128(x.as_u128()),
            // wizer only asks for globals it found in the module, of these types.
            other => panic!("wizer asked for global {name}, which is {other:?}"),
        };
        std::future::ready(value)
    }

    fn memory_contents(
        &mut self,
        name: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) -> impl Future<Output = ()> + Send {
        if let Some(memory) = self.instance.get_memory(&mut *self.store, name) {
            contents(memory.data(&*self.store));
        }
        std::future::ready(())
    }
}

/// Drives a future that never waits (wizer's snapshot is async only to suit async hosts).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("wizer's snapshot does not wait on anything"),
    }
}
