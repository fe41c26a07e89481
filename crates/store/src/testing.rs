//! For tests of this crate and of the crates above it: a fresh PostgreSQL database per test on
//! the local server, and a fresh SQLite file. Not used by the server itself.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

/// The PostgreSQL these machines run: 127.0.0.1:5432, trust auth, database `test`.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Where tests may create databases: `PICLOUD_TEST_DATABASE_URL`, else [`DEFAULT_PG_URL`].
pub fn pg_admin_url() -> String {
    std::env::var("PICLOUD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.into())
}

/// Creates an empty database for one test, named after the process and a counter, and returns
/// its URL. Databases of earlier test processes that are gone are dropped first.
///
/// # Panics
///
/// When PostgreSQL cannot be reached: the tests that need it fail, never skip.
pub async fn fresh_pg_database() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "picloud_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let admin = pg_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for these tests: {e}"));
    let stale: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'picloud_test_%'")
            .fetch_all(&mut conn)
            .await
            .expect("list test databases");
    for db in stale {
        let pid = db.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            // Another test process may be dropping it at the same moment.
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .expect("drop an old test database");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("PICLOUD_TEST_DATABASE_URL must name a database: {admin}"),
    }
}

/// A path for a new SQLite store in `dir` (created if needed), named after the process and a
/// counter; a file left there by an earlier run of the same name is removed.
///
/// # Panics
///
/// When `dir` cannot be created.
pub fn fresh_sqlite_path(dir: &Path) -> std::path::PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::fs::create_dir_all(dir).expect("a directory for SQLite stores");
    let path = dir.join(format!(
        "{}-{}.db",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    path
}
