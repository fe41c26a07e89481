//! Live tails: each has its own bounded queue, so another tenant's traffic never takes a
//! tail's place or shows in its drop count, and a tail that falls behind loses only its own
//! newest records, counted.

use std::path::PathBuf;

use picloud_shared::{InvocationResult, Outcome};
use picloud_store::records::{MAX_TAILS_PER_TENANT, TAIL_QUEUE, TooManyTails};
use picloud_store::{AnyStore, InvocationRecord, RecordConfig, Recorder, SqliteStore, Trigger};

fn record(tenant: i64, function: i64) -> InvocationRecord {
    let result = InvocationResult::failed(Outcome::Ok, std::time::Duration::from_micros(5));
    InvocationRecord::new(tenant, function, 1, Trigger::Http, &result)
}

async fn recorder(name: &str) -> std::sync::Arc<Recorder> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tail-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let store = AnyStore::Sqlite(
        SqliteStore::open(&dir.join("picloud.db"))
            .await
            .expect("open"),
    );
    Recorder::start(store, RecordConfig::default()).expect("recorder")
}

#[tokio::test]
async fn another_tenants_flood_never_reaches_a_stalled_tail() {
    let recorder = recorder("flood").await;
    // Tenant 1's tail on function 10, not read while tenant 2 records 5,000 invocations of
    // function 20 and tenant 1 five of its own.
    let mut tail = recorder.subscribe(1, 10).expect("a tail");
    for _ in 0..5_000 {
        recorder.record(record(2, 20));
    }
    for _ in 0..5 {
        recorder.record(record(1, 10));
    }
    let mut seen = 0;
    while let Ok(r) = tail.records.try_recv() {
        assert_eq!(r.function_id, 10);
        seen += 1;
    }
    assert_eq!(
        seen, 5,
        "every record of its own, none of the other tenant's"
    );
    assert_eq!(
        tail.take_dropped(),
        0,
        "nothing dropped: the flood was not its"
    );
}

#[tokio::test]
async fn a_tail_that_falls_behind_counts_only_its_own_dropped_records() {
    let recorder = recorder("behind").await;
    let mut tail = recorder.subscribe(1, 10).expect("a tail");
    let other = recorder.subscribe(1, 11).expect("another tail");
    for _ in 0..TAIL_QUEUE + 44 {
        recorder.record(record(1, 10));
    }
    recorder.record(record(1, 11));
    let mut seen = 0;
    while tail.records.try_recv().is_ok() {
        seen += 1;
    }
    assert_eq!(seen, TAIL_QUEUE);
    assert_eq!(tail.take_dropped(), 44);
    assert_eq!(tail.take_dropped(), 0, "taken once");
    assert_eq!(other.take_dropped(), 0);
    // Reading again, it gets what comes next.
    recorder.record(record(1, 10));
    assert!(tail.records.try_recv().is_ok());
}

#[tokio::test]
async fn a_tenant_has_a_bounded_number_of_tails() {
    let recorder = recorder("cap").await;
    let mut open: Vec<_> = (0..MAX_TAILS_PER_TENANT)
        .map(|_| recorder.subscribe(1, 10).expect("within the cap"))
        .collect();
    assert_eq!(recorder.subscribe(1, 10).err(), Some(TooManyTails));
    assert!(
        recorder.subscribe(2, 20).is_ok(),
        "another tenant has its own"
    );
    // A closed tail frees its place.
    drop(open.pop());
    assert!(recorder.subscribe(1, 10).is_ok());
}
