//! PiCloud's control plane (DESIGN.md §4): the data, in one [`Store`] interface with two
//! implementations — PostgreSQL (the source of truth in a cluster) and an embedded SQLite file
//! (the zero-setup default), each migrated at start-up by sqlx's migrator — and the management
//! API over it ([`api`]).

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod kv;
pub mod limits;
mod names;
pub mod records;
pub mod routes;
pub mod schedules;
pub mod script;
pub mod secrets;
mod spool;
mod store;
#[doc(hidden)]
pub mod testing;
pub mod tokens;

pub use limits::{FunctionLimits, LimitOverrides};
pub use names::{InvalidName, validate_name};
pub use records::{
    InvocationRecord, RecordConfig, RecordFilter, RecordedRequest, Recorder, Trigger,
};
pub use routes::{Route, RouteEvent, RouteWatch};
pub use store::{
    AnyStore, EnvVar, Function, KvQuota, KvUsage, NewFunction, PgStore, SavedVersion, Schedule,
    ScheduleClaim, ScheduleRun, SqliteStore, Store, StoreError, StoredToken, Tenant, Token,
    Version, VersionQuota,
};
