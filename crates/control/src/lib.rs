//! PiCloud's control plane (DESIGN.md §4): the management API over the store ([`api`]), tokens
//! and the admin's first token, the dashboard's files, script checks, and the schedules.
//! The data itself is `picloud-store`'s; its names are re-exported here while the data plane
//! this crate still holds (issue 22) moves to the node.

pub mod api;
pub mod args;
pub mod auth;
pub mod dashboard;
pub mod script;

pub use picloud_edge::tokens;
/// The store's module, under the path this crate's code has always used.
pub(crate) use picloud_store as store;
pub use picloud_store::{
    AnyStore, EnvVar, Function, FunctionLimits, InvalidName, InvocationRecord, KvQuota, KvUsage,
    LimitOverrides, NewFunction, PgStore, RecordConfig, RecordFilter, RecordedRequest, Recorder,
    Route, RouteEvent, RouteWatch, SavedVersion, Schedule, ScheduleClaim, ScheduleRun, SqliteStore,
    Store, StoreError, StoredToken, Tenant, Token, Trigger, Version, VersionQuota, kv, limits,
    records, routes, secrets, testing, validate_name,
};
