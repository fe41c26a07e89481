//! PiCloud's fuzz checks: each takes arbitrary bytes and panics on a property broken. The
//! cargo fuzz targets in `fuzz_targets/` call them (`scripts/fuzz`), and `tests/corpus.rs`
//! replays the committed seed corpus (`corpus/`) through them on every test run, so that what
//! the fuzzer once found stays fixed.

pub mod api;
pub mod guest;

/// The module cache the checks share with each other across runs (compiling the guest takes
/// seconds): `PICLOUD_FUZZ_CACHE`, or a directory under the system's temporary one.
fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("PICLOUD_FUZZ_CACHE")
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("picloud-fuzz-cache"))
}

/// The one-worker tokio runtime each check drives its harness on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// `data` cut at its first `n - 1` zero bytes into `n` parts (missing parts empty).
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |&b| b == 0).collect();
    out.resize(n, &[]);
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
