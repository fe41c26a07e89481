//! The admin's first token, on both back ends (see `picloud-store`'s conformance suite for the
//! store itself): made once at first start, or the one the operator chose.

use std::path::PathBuf;

use picloud_control::auth::bootstrap_admin;
use picloud_edge::tokens::{TOKEN_PREFIX, hash_token};
use picloud_store::testing::{fresh_pg_database, fresh_sqlite_path};
use picloud_store::{PgStore, SqliteStore, Store};

async fn fresh_pg() -> PgStore {
    PgStore::connect(&fresh_pg_database().await)
        .await
        .expect("connect and migrate")
}

async fn fresh_sqlite() -> SqliteStore {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sqlite-stores");
    SqliteStore::open(&fresh_sqlite_path(&dir))
        .await
        .expect("open and migrate")
}

async fn first_start_creates_one_admin_token(s: &impl Store) {
    let token = bootstrap_admin(s, None)
        .await
        .expect("bootstrap")
        .expect("a new token");
    assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 64);
    let stored = s
        .token_by_hash(&hash_token(&token))
        .await
        .expect("get")
        .expect("stored by hash");
    assert!(stored.admin);
    // Only the hash is stored: the plain token appears in no listed field.
    let listed = format!("{:?}", s.list_tokens(None).await.expect("list"));
    assert!(!listed.contains(&token));
    // A second start creates nothing, and ignores a chosen token.
    assert_eq!(
        bootstrap_admin(s, Some("x".repeat(30).as_str()))
            .await
            .expect("again"),
        None
    );
    assert_eq!(s.list_tokens(None).await.expect("list").len(), 1);
}

async fn a_chosen_admin_token_is_used(s: &impl Store) {
    assert!(
        bootstrap_admin(s, Some("short")).await.is_err(),
        "too short is refused"
    );
    let chosen = "pc_automation-token-0123456789";
    assert_eq!(
        bootstrap_admin(s, Some(chosen))
            .await
            .expect("bootstrap")
            .as_deref(),
        Some(chosen)
    );
    assert!(
        s.token_by_hash(&hash_token(chosen))
            .await
            .expect("get")
            .is_some()
    );
}

#[tokio::test]
async fn sqlite() {
    first_start_creates_one_admin_token(&fresh_sqlite().await).await;
    a_chosen_admin_token_is_used(&fresh_sqlite().await).await;
}

#[tokio::test]
async fn postgres() {
    first_start_creates_one_admin_token(&fresh_pg().await).await;
    a_chosen_admin_token_is_used(&fresh_pg().await).await;
}
