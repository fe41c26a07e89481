//! PiCloud's data (DESIGN.md §4): the domain types, one [`Store`] interface with two
//! implementations — PostgreSQL (the source of truth in a cluster) and an embedded SQLite file
//! (the zero-setup default), each migrated at start-up by sqlx's migrator — the announcements
//! of route changes ([`routes`]), the invocation record writer and its spool ([`records`]) and
//! the key-value store as the guest's host calls ([`kv`]). The control plane and the nodes both
//! build on it; it knows neither.

pub mod kv;
pub mod limits;
mod names;
pub mod records;
pub mod routes;
pub mod schedule_spec;
pub mod secrets;
mod spool;
mod store;
#[doc(hidden)]
pub mod testing;

pub use limits::{FunctionLimits, LimitOverrides};
pub use names::{InvalidName, validate_name};
pub use records::{
    InvocationRecord, RecordConfig, RecordFilter, RecordedRequest, Recorder, Trigger,
};
pub use routes::{Route, RouteEvent, RouteWatch};
pub use store::{
    AnyStore, EnvVar, Function, FunctionStore, KvQuota, KvStore, KvUsage, NewFunction, PgStore,
    RecordStore, RouteStore, SavedVersion, Schedule, ScheduleClaim, ScheduleRun, ScheduleStore,
    SqliteStore, Store, StoreError, StoredToken, Tenant, TenantStore, Token, Version, VersionQuota,
    now_ms, random_id, sha256_hex,
};
