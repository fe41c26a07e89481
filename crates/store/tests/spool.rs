//! The record spool, on both back ends: records queued by a process that died are written when
//! the next one starts, once each even when a segment is replayed twice; a record written
//! twice is kept once, and records of a deleted function do not fail their batch.

use std::path::{Path, PathBuf};
use std::time::Duration;

use picloud_shared::{InvocationResult, LogLevel, LogLine, Outcome};
use picloud_store::testing::fresh_pg_database;
use picloud_store::{
    AnyStore, InvocationRecord, PgStore, RecordConfig, RecordFilter, Recorder, SqliteStore, Trigger,
};

fn temp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("spool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn record(tenant: i64, function: i64, n: usize) -> InvocationRecord {
    let result = InvocationResult {
        outcome: Outcome::Ok,
        response: None,
        duration_us: 10,
        wait_us: 0,
        fuel_used: 1,
        peak_memory_bytes: 1,
        logs: vec![LogLine {
            level: LogLevel::Info,
            message: format!("n={n}"),
        }],
        logs_truncated: false,
    };
    InvocationRecord::new(tenant, function, 1, Trigger::Http, &result)
}

fn config(spool: &Path) -> RecordConfig {
    RecordConfig {
        spool: Some(spool.to_path_buf()),
        ..RecordConfig::default()
    }
}

async fn count(store: &AnyStore, function: i64) -> Vec<String> {
    let filter = RecordFilter {
        limit: 1_000,
        ..RecordFilter::default()
    };
    let mut ns: Vec<String> = store
        .records(function, &filter)
        .await
        .expect("records")
        .into_iter()
        .map(|r| r.logs[0].message.clone())
        .collect();
    ns.sort();
    ns
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// `open` gives the same database each time it is called.
fn queued_records_outlive_their_process(name: &str, open: impl Fn() -> AnyStore) {
    let dir = temp(name);
    let spool = dir.join("spool");
    let (tenant, function) = runtime().block_on(async {
        let store = open();
        let t = store.create_tenant("acme").await.expect("tenant");
        let f = store
            .create_function(t.id, "f", true)
            .await
            .expect("function");
        (t.id, f.id)
    });

    // A process records 50 invocations and dies before its writer's first batch (it lingers
    // 100 ms for more): nothing is in the database, everything is in the spool.
    let rt = runtime();
    rt.block_on(async {
        let recorder = Recorder::start(open(), config(&spool)).expect("recorder");
        for n in 0..50 {
            recorder.record(record(tenant, function, n));
        }
    });
    rt.shutdown_timeout(Duration::ZERO);
    let written = runtime().block_on(async { count(&open(), function).await });
    assert!(written.is_empty(), "written before the linger: {written:?}");
    let before_restart = dir.join("copy");
    copy_dir(&spool, &before_restart);

    // The next process writes them first.
    runtime().block_on(async {
        let store = open();
        let recorder = Recorder::start(store.clone(), config(&spool)).expect("recorder");
        recorder.record(record(tenant, function, 50));
        assert!(recorder.flush(Duration::from_secs(10)).await);
        let mut want: Vec<String> = (0..=50).map(|n| format!("n={n}")).collect();
        want.sort();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while count(&store, function).await != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                count(&store, function).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let left: Vec<_> = std::fs::read_dir(&spool)
        .expect("spool")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        left.is_empty(),
        "written records left in the spool: {left:?}"
    );

    // A process that died after writing a batch but before removing its segments: the replay
    // writes nothing twice.
    copy_dir(&before_restart, &spool);
    runtime().block_on(async {
        let store = open();
        let recorder = Recorder::start(store.clone(), config(&spool)).expect("recorder");
        assert!(recorder.flush(Duration::from_secs(10)).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = count(&store, function).await;
        assert_eq!(got.len(), 51, "{got:?}");
    });
}

async fn written_twice_kept_once_and_deleted_functions_left_out(store: AnyStore) {
    let t = store.create_tenant("acme").await.expect("tenant");
    let f = store
        .create_function(t.id, "f", true)
        .await
        .expect("function");
    let g = store
        .create_function(t.id, "g", true)
        .await
        .expect("function");
    let batch: Vec<InvocationRecord> = (0..5).map(|n| record(t.id, f.id, n)).collect();
    store.insert_records(&batch).await.expect("insert");
    store.insert_records(&batch).await.expect("insert again");
    assert_eq!(count(&store, f.id).await.len(), 5);
    // A batch with records of a function deleted since: the others are written.
    let mixed = vec![record(t.id, g.id, 0), record(t.id, f.id, 5)];
    store.delete_function(t.id, "g").await.expect("delete");
    store.insert_records(&mixed).await.expect("insert");
    assert_eq!(count(&store, f.id).await.len(), 6);
    // Only records of deleted functions: nothing to write, no error.
    store
        .insert_records(&[record(t.id, g.id, 1)])
        .await
        .expect("insert");
}

#[test]
fn queued_records_outlive_their_process_on_sqlite() {
    let path = temp("sqlite-db").join("picloud.db");
    queued_records_outlive_their_process("sqlite", || {
        let path = path.clone();
        // Opened on the runtime of the caller.
        futures_block(
            async move { AnyStore::Sqlite(SqliteStore::open(&path).await.expect("open")) },
        )
    });
}

#[test]
fn queued_records_outlive_their_process_on_postgres() {
    let url = runtime().block_on(fresh_pg_database());
    queued_records_outlive_their_process("postgres", || {
        let url = url.clone();
        futures_block(
            async move { AnyStore::Postgres(PgStore::connect(&url).await.expect("connect")) },
        )
    });
}

/// Runs `f` to completion inside the current runtime's context (`open` is called from within
/// `block_on`, where a nested `block_on` is not allowed).
fn futures_block<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test]
async fn written_twice_kept_once_on_sqlite() {
    let path = temp("sqlite-twice").join("picloud.db");
    let store = AnyStore::Sqlite(SqliteStore::open(&path).await.expect("open"));
    written_twice_kept_once_and_deleted_functions_left_out(store).await;
}

#[tokio::test]
async fn written_twice_kept_once_on_postgres() {
    let url = fresh_pg_database().await;
    let store = AnyStore::Postgres(PgStore::connect(&url).await.expect("connect"));
    written_twice_kept_once_and_deleted_functions_left_out(store).await;
}

/// A spool line as the recorder writes it: the record with the fields the API does not show.
fn spool_line(record: &InvocationRecord) -> String {
    let mut value = serde_json::to_value(record).expect("a record is JSON");
    let object = value.as_object_mut().expect("an object");
    object.insert("tenant_id".into(), record.tenant_id.into());
    object.insert("function_id".into(), record.function_id.into());
    object.insert("key".into(), record.key.clone().into());
    format!("{value}\n")
}

/// A record PostgreSQL cannot store (a NUL in its text, as a server before this check queued
/// it) sits in the spool between two good ones: the good ones and every later record are
/// written, the bad one is set aside in `rejected.jsonl` and counted, and nothing is retried
/// for ever. New records with a NUL are made storable before they are queued.
#[test]
fn a_record_the_database_refuses_is_set_aside_and_holds_back_nothing_on_postgres() {
    let dir = temp("poison");
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).expect("spool dir");
    let url = runtime().block_on(fresh_pg_database());
    runtime().block_on(async {
        let store = AnyStore::Postgres(PgStore::connect(&url).await.expect("connect"));
        let t = store.create_tenant("acme").await.expect("tenant");
        let f = store
            .create_function(t.id, "f", true)
            .await
            .expect("function");
        let mut poison = record(t.id, f.id, 1);
        poison.message = Some("bad\0byte".into());
        let left = [record(t.id, f.id, 0), poison.clone(), record(t.id, f.id, 2)]
            .iter()
            .map(spool_line)
            .collect::<String>();
        std::fs::write(spool.join("records-00000000000000000000.jsonl"), left).expect("segment");

        let recorder = Recorder::start(store.clone(), config(&spool)).expect("recorder");
        let mut fresh = record(t.id, f.id, 3);
        fresh.message = Some("thrown: bad\0byte".into());
        fresh.logs[0].message = "n=3\0".into();
        recorder.record(fresh);
        assert!(recorder.flush(Duration::from_secs(20)).await, "flushed");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while count(&store, f.id).await.len() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                count(&store, f.id).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            count(&store, f.id).await,
            ["n=0", "n=2", "n=3\u{FFFD}"],
            "the good records and the new one, its NUL replaced"
        );
        assert_eq!(recorder.rejected(), 1);
        assert_eq!(recorder.dropped(), 0);
        let stored = store
            .records(
                f.id,
                &RecordFilter {
                    limit: 10,
                    ..RecordFilter::default()
                },
            )
            .await
            .expect("records");
        assert!(
            stored
                .iter()
                .any(|r| r.message.as_deref() == Some("thrown: bad\u{FFFD}byte")),
            "{stored:?}"
        );
        let aside = std::fs::read_to_string(spool.join("rejected.jsonl")).expect("set aside");
        assert_eq!(aside.lines().count(), 1, "{aside}");
        assert!(aside.contains(&poison.key), "{aside}");
        let segments: Vec<_> = std::fs::read_dir(&spool)
            .expect("spool")
            .flatten()
            .filter(|e| e.file_name() != "rejected.jsonl")
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .filter(|s| !s.is_empty())
            .collect();
        assert!(segments.is_empty(), "left in the spool: {segments:?}");
    });
}
