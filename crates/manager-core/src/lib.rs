//! PiCloud's control plane (DESIGN.md §4). This first part is the data: one [`Store`]
//! interface with two implementations, PostgreSQL (the source of truth in a cluster) and an
//! embedded SQLite file (the zero-setup default), each migrated at start-up by sqlx's migrator.

pub mod auth;
mod names;
mod store;

pub use names::{InvalidName, validate_name};
pub use store::{
    AnyStore, EnvVar, Function, PgStore, SqliteStore, Store, StoreError, Tenant, Token, Version,
};
