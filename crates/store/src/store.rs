//! The store: one trait per aggregate ([`TenantStore`], [`FunctionStore`], [`RouteStore`],
//! [`RecordStore`], [`ScheduleStore`], [`KvStore`]) and [`Store`], all of them at once. Both
//! back ends run the same SQL text (sqlx binds `$1` positionally on SQLite too); only the
//! migrations differ by dialect. The implementation is written once, in [`impl_store!`], and
//! expanded for each pool type; [`AnyStore`] derefs to `dyn Store`, so no method is written a
//! second time to choose between them (the traits are object-safe through `async_trait`: one
//! boxed future per call, nothing beside a database round trip).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::secrets::{KeySource, SecretKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgPool, PgPoolOptions};
use utoipa::ToSchema;

use tokio::sync::broadcast;

use crate::limits::LimitOverrides;
use crate::records::{InvocationRecord, RecordFilter, RecordRow, RecordSample, SampleRow};
use crate::routes::{Route, RouteEvent, RouteRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// A write would take a tenant past a quota; the message says which.
    #[error("{0}")]
    Quota(String),
    /// A write that would break a rule of the installation (the last admin token); the message
    /// says which.
    #[error("{0}")]
    Refused(String),
    /// An applied migration was edited, or migrating failed: start-up must stop.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl StoreError {
    /// The database answered that it cannot store this data (PostgreSQL's classes 22, data
    /// exception — a NUL in text, say — and 23, integrity; SQLite's too big, constraint,
    /// mismatch and range): the same rows will be refused again, however often they are tried.
    /// A lost connection, a full disk or a busy database is not a refusal.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(d)) => d.code().is_some_and(|code| {
                code.starts_with("22")
                    || code.starts_with("23")
                    || code
                        .parse::<u32>()
                        .is_ok_and(|n| matches!(n & 0xff, 18 | 19 | 20 | 25))
            }),
            Self::Database(sqlx::Error::Encode(_)) => true,
            _ => false,
        }
    }

    fn from_sqlx(e: sqlx::Error, what: &'static str) -> Self {
        match &e {
            sqlx::Error::RowNotFound => Self::NotFound(what),
            sqlx::Error::Database(d) if d.is_unique_violation() => Self::Conflict(what),
            _ => Self::Database(e),
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Tenant {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    /// The admin's ceilings on this tenant's function limits.
    #[sqlx(flatten)]
    pub ceilings: LimitOverrides,
    /// Whether its schedules may fire more than once a minute (an admin's choice; off).
    pub sub_minute_schedules: bool,
}

/// A token as stored: never its secret, only a hash of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Token {
    pub id: i64,
    /// `None` for an admin token.
    pub tenant_id: Option<i64>,
    pub name: String,
    pub admin: bool,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A token as a cache of credentials needs it: with the hash of its secret. Never leaves the
/// server.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredToken {
    pub id: i64,
    pub tenant_id: Option<i64>,
    pub name: String,
    pub admin: bool,
    pub hash: String,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Function {
    pub id: i64,
    pub tenant_id: i64,
    pub name: String,
    pub public: bool,
    pub active_version: Option<i32>,
    pub created_at: i64,
    /// The limits this function chose.
    #[sqlx(flatten)]
    pub limits: LimitOverrides,
    /// Its script sees the caller's `Authorization` header (never a platform token). Default
    /// `false`: the header is removed.
    pub forward_authorization: bool,
}

/// An immutable saved version of a function's script (its source is fetched separately).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Version {
    pub function_id: i64,
    pub version: i32,
    pub sha256: String,
    pub author: String,
    pub created_at: i64,
    /// Kept by every pruning, automatic or asked for, until unpinned.
    pub pinned: bool,
}

/// An environment variable as listed: a secret's value is never read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
    pub secret: bool,
}

/// A cron trigger of a function, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Schedule {
    pub id: i64,
    pub function_id: i64,
    pub cron: String,
    pub time_zone: String,
    pub enabled: bool,
    /// JSON text handed to `on_schedule` as `event.payload`.
    pub payload: Option<String>,
    /// The first tick not yet claimed (Unix ms).
    pub next_run_at: i64,
    /// While a run is in progress: when its lease lapses (Unix ms).
    pub running_until: Option<i64>,
    /// Ticks missed and not run (past the backfill window).
    pub skipped_ticks: i64,
    pub created_at: i64,
}

impl Schedule {
    /// The payload as `on_schedule` gets it: `()` (JSON null) when there is none or it is
    /// not JSON (it is checked when saved).
    pub fn payload_value(&self) -> serde_json::Value {
        self.payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// One claimed tick of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct ScheduleRun {
    pub schedule_id: i64,
    /// The tick (Unix ms).
    pub due_at: i64,
    pub claimed_at: i64,
    pub backfill: bool,
    /// Which scheduler claimed it.
    pub owner: String,
    pub finished_at: Option<i64>,
    /// The invocation's outcome kind; `None` while running; `abandoned` when the scheduler
    /// running it stopped before it finished.
    pub outcome: Option<String>,
}

/// A scheduler's claim on a schedule's due ticks: a compare-and-set on `next_run_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleClaim<'a> {
    pub schedule_id: i64,
    /// `next_run_at` as the scheduler read it; the claim fails if it moved.
    pub expected_next: i64,
    /// The new `next_run_at`: the first tick after those claimed.
    pub following: i64,
    /// The lease of the runs: no other claim on the schedule until then, unless released.
    pub lease_until: i64,
    /// The ticks to run now, oldest first, with whether each is a backfill.
    pub runs: &'a [(i64, bool)],
    /// Missed ticks given up.
    pub skipped: u64,
    pub owner: &'a str,
    pub now: i64,
}

/// A new id for a row a tenant sees (its tokens, schedules, invocation records): random, so
/// that the gaps between a tenant's own ids say nothing of other tenants' activity, and below
/// 2⁵³ so that JavaScript reads it exactly. A collision (one in 2⁵³ per pair of live rows) is a
/// unique violation, never an overwrite.
/// Records one pruning statement deletes at most.
const PRUNE_BATCH: i64 = 1_000;

pub fn random_id() -> i64 {
    let mut bytes = [0u8; 8];
    // Without randomness from the kernel (never seen on Linux), the clock's nanoseconds mixed
    // in still give ids that are not a count.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .to_le_bytes();
    }
    i64::try_from(u64::from_le_bytes(bytes) >> 11)
        .unwrap_or(1)
        .max(1)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// All of the data, for code that touches several aggregates: every store below at once. Its
/// methods are those of the aggregate stores (callable with only `Store` in scope). Every method
/// that names a tenant's object takes the tenant, so a caller cannot reach another tenant's data
/// by id alone.
pub trait Store:
    TenantStore + FunctionStore + RouteStore + RecordStore + ScheduleStore + KvStore
{
}

impl<T> Store for T where
    T: TenantStore + FunctionStore + RouteStore + RecordStore + ScheduleStore + KvStore
{
}

/// Tenants and their tokens (tokens are kept only as hashes).
#[async_trait::async_trait]
pub trait TenantStore: Send + Sync + std::fmt::Debug {
    async fn create_tenant(&self, name: &str) -> Result<Tenant>;
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>>;
    async fn tenant(&self, id: i64) -> Result<Option<Tenant>>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;
    /// Sets the admin's ceilings on a tenant's function limits (`None`: the platform's).
    async fn set_tenant_ceilings(
        &self,
        tenant_id: i64,
        ceilings: &LimitOverrides,
    ) -> Result<Tenant>;
    /// Allows (or stops allowing) the tenant's new schedules to fire more than once a minute.
    async fn set_sub_minute_schedules(&self, tenant_id: i64, allowed: bool) -> Result<Tenant>;
    /// Deletes a tenant with everything it owns: tokens, functions, versions, variables,
    /// schedules, records and keys ([`StoreError::NotFound`] when it is gone already). Its
    /// records go first, in batches, so that no one statement holds the database for long.
    async fn delete_tenant(&self, tenant_id: i64) -> Result<()>;
    /// Stores a token by the hash of its secret.
    async fn create_token(
        &self,
        tenant_id: Option<i64>,
        name: &str,
        hash: &str,
        admin: bool,
    ) -> Result<Token>;
    /// The unrevoked token with this hash.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<Token>>;
    /// Every unrevoked token with its hash: what a token cache holds.
    async fn active_tokens(&self) -> Result<Vec<StoredToken>>;
    /// One token with its hash, revoked or not.
    async fn stored_token(&self, id: i64) -> Result<Option<StoredToken>>;
    /// A tenant's tokens, or (with `None`) the admin tokens.
    async fn list_tokens(&self, tenant_id: Option<i64>) -> Result<Vec<Token>>;
    async fn revoke_token(&self, tenant_id: Option<i64>, id: i64) -> Result<()>;
}

/// A tenant's functions: their immutable versions, the live one, their variables and secrets.
#[async_trait::async_trait]
pub trait FunctionStore: Send + Sync + std::fmt::Debug {
    async fn create_function(&self, tenant_id: i64, name: &str, public: bool) -> Result<Function>;
    /// Creates a function with its limits and, if given, its first version (deployed when
    /// asked), in one transaction: a failure half-way (a full disk, a lost connection) leaves
    /// nothing behind.
    async fn create_function_with(&self, new: &NewFunction<'_>) -> Result<Function>;
    async fn function(&self, tenant_id: i64, name: &str) -> Result<Option<Function>>;
    async fn list_functions(&self, tenant_id: i64) -> Result<Vec<Function>>;
    /// Sets whether the function is public and the limits it chose (`None`: the default).
    async fn update_function(
        &self,
        function_id: i64,
        public: bool,
        limits: &LimitOverrides,
    ) -> Result<Function>;
    /// Sets whether the function's script sees its caller's `Authorization` header.
    async fn set_forward_authorization(&self, function_id: i64, forward: bool) -> Result<Function>;
    async fn delete_function(&self, tenant_id: i64, name: &str) -> Result<()>;
    /// Saves `source` as the function's next version (1, 2, …) with its SHA-256.
    async fn add_version(&self, function_id: i64, source: &str, author: &str) -> Result<Version>;
    /// As [`Store::add_version`] within `quota`: the function's oldest versions that are
    /// neither live nor among its newest `keep_newest` are pruned to make room (in the same
    /// transaction); when that is not enough, [`StoreError::Quota`] and nothing changes.
    async fn add_version_within(
        &self,
        tenant_id: i64,
        function_id: i64,
        source: &str,
        author: &str,
        quota: &VersionQuota,
    ) -> Result<SavedVersion>;
    async fn versions(&self, function_id: i64) -> Result<Vec<Version>>;
    /// Pins or unpins a version ([`StoreError::NotFound`] when there is no such version).
    async fn set_version_pinned(
        &self,
        function_id: i64,
        version: i32,
        pinned: bool,
    ) -> Result<Version>;
    /// Deletes the function's versions that are neither live, pinned, nor among its newest
    /// `keep`; returns their numbers, oldest first.
    async fn prune_versions(&self, function_id: i64, keep: u32) -> Result<Vec<i32>>;
    async fn version_source(&self, function_id: i64, version: i32) -> Result<Option<String>>;
    /// Makes `version` the active one, in one transaction (deploy and rollback alike).
    async fn deploy(&self, function_id: i64, version: i32) -> Result<Function>;
    async fn set_env(&self, function_id: i64, name: &str, value: &str, secret: bool) -> Result<()>;
    async fn unset_env(&self, function_id: i64, name: &str) -> Result<()>;
    /// Variables for display: secrets without their values.
    async fn list_env(&self, function_id: i64) -> Result<Vec<EnvVar>>;
    /// Every name and value, secrets included: for the executor only.
    async fn env_values(&self, function_id: i64) -> Result<Vec<(String, String)>>;
    /// Seals every secret variable stored in the clear (written before sealing, or by a server
    /// without the key) and checks that every sealed one opens with this store's key; returns
    /// how many it sealed. Without a key, nothing.
    async fn seal_secrets(&self) -> Result<u64>;
}

/// What the routing tables load: each routable function's live version, limits and variables.
#[async_trait::async_trait]
pub trait RouteStore: Send + Sync + std::fmt::Debug {
    /// Every function with an active version, as its endpoint runs it.
    async fn routes(&self) -> Result<Vec<Route>>;
    /// One function's route; `None` when it has none (no active version, or deleted).
    async fn function_route(&self, function_id: i64) -> Result<Option<Route>>;
    /// The routes of one tenant's functions.
    async fn tenant_routes(&self, tenant_id: i64) -> Result<Vec<Route>>;
}

/// Invocation records: written in batches by the record writer, queried by the API, pruned per tenant.
#[async_trait::async_trait]
pub trait RecordStore: Send + Sync + std::fmt::Debug {
    /// Writes records in one transaction.
    async fn insert_records(&self, records: &[InvocationRecord]) -> Result<()>;
    /// A function's records, newest first.
    async fn records(
        &self,
        function_id: i64,
        filter: &RecordFilter,
    ) -> Result<Vec<InvocationRecord>>;
    /// What a function's statistics need of its records since `since` (Unix ms), test
    /// invocations left out (they are not its traffic).
    async fn record_samples(&self, function_id: i64, since: i64) -> Result<Vec<RecordSample>>;
    /// Deletes records older than `older_than` (Unix ms), all but the newest `per_function`
    /// of each function and all but the newest `per_tenant` of each tenant; returns how many.
    async fn prune_records(
        &self,
        older_than: i64,
        per_function: u32,
        per_tenant: u32,
    ) -> Result<u64>;
}

/// Schedules and their runs: each due tick claimed by exactly one scheduler.
#[async_trait::async_trait]
pub trait ScheduleStore: Send + Sync + std::fmt::Debug {
    /// Adds a schedule to a function.
    async fn create_schedule(
        &self,
        function_id: i64,
        cron: &str,
        time_zone: &str,
        enabled: bool,
        payload: Option<&str>,
        next_run_at: i64,
    ) -> Result<Schedule>;
    /// A function's schedules, oldest first.
    async fn schedules(&self, function_id: i64) -> Result<Vec<Schedule>>;
    /// One schedule by id, whatever its function (for schedulers).
    async fn schedule(&self, id: i64) -> Result<Option<Schedule>>;
    /// Every enabled schedule (for schedulers).
    async fn enabled_schedules(&self) -> Result<Vec<Schedule>>;
    /// Pauses or resumes a function's schedule; resuming sets `next_run_at` afresh.
    async fn set_schedule_enabled(
        &self,
        function_id: i64,
        id: i64,
        enabled: bool,
        next_run_at: i64,
    ) -> Result<Schedule>;
    async fn delete_schedule(&self, function_id: i64, id: i64) -> Result<()>;
    /// Claims due ticks (see [`ScheduleClaim`]); `None` when another scheduler got there first,
    /// the schedule changed, was paused or deleted, or a run still holds its lease. On success,
    /// how many earlier runs were found abandoned (their lease lapsed unfinished) and marked so.
    async fn claim_ticks(&self, claim: &ScheduleClaim<'_>) -> Result<Option<u64>>;
    /// Records a claimed tick's outcome.
    async fn finish_run(
        &self,
        schedule_id: i64,
        due_at: i64,
        outcome: &str,
        finished_at: i64,
    ) -> Result<()>;
    /// Ends the lease `lease_until` of a schedule's runs (if it is still theirs), and announces
    /// it.
    async fn release_schedule(&self, schedule_id: i64, lease_until: i64) -> Result<()>;
    /// A schedule's claimed ticks, newest first, at most `limit`.
    async fn schedule_runs(&self, schedule_id: i64, limit: u32) -> Result<Vec<ScheduleRun>>;
}

/// Each tenant's key-value store, within its quota.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// The JSON text stored under `key` in the tenant's key-value store.
    async fn kv_get(&self, tenant_id: i64, key: &str) -> Result<Option<String>>;
    /// Stores `value` under `key`. The tenant's usage is checked against `quota` and updated in
    /// the same transaction; past it, [`StoreError::Quota`] and nothing is written.
    async fn kv_set(&self, tenant_id: i64, key: &str, value: &str, quota: &KvQuota) -> Result<()>;
    /// Removes `key`; whether it existed.
    async fn kv_delete(&self, tenant_id: i64, key: &str) -> Result<bool>;
    /// Keys starting with `prefix`, in byte order, after `after`, at most `limit`.
    async fn kv_list(
        &self,
        tenant_id: i64,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>>;
    /// How much of its key-value quota the tenant uses.
    async fn kv_usage(&self, tenant_id: i64) -> Result<KvUsage>;
}

/// What a tenant's versions may hold, and how many one function keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionQuota {
    /// Versions one function keeps; past it its oldest prunable ones go. Default 1,000.
    pub max_per_function: u32,
    /// Bytes of source all of a tenant's versions may hold. Default 64 MiB.
    pub max_tenant_bytes: u64,
    /// A function's newest versions that are never pruned to make room (its live version never
    /// is either). Default 10.
    pub keep_newest: u32,
}

impl Default for VersionQuota {
    fn default() -> Self {
        Self {
            max_per_function: 1_000,
            max_tenant_bytes: 64 << 20,
            keep_newest: 10,
        }
    }
}

/// A version saved within its quota, and the old ones pruned to make room for it.
#[derive(Debug, Clone)]
pub struct SavedVersion {
    pub version: Version,
    pub pruned: Vec<i32>,
}

/// A tenant's key-value quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    pub max_keys: u64,
    /// Keys and values together.
    pub max_bytes: u64,
}

/// A tenant's use of its key-value quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KvUsage {
    pub keys: u64,
    pub bytes: u64,
}

// Column lists as macros so that `concat!` can build each query as one literal.
macro_rules! tenant_cols {
    () => {
        "id, name, created_at, max_timeout_ms AS timeout_ms, max_fuel AS fuel, max_memory_bytes AS memory_bytes, max_concurrency AS concurrency, sub_minute_schedules"
    };
}

macro_rules! function_cols {
    () => {
        "id, tenant_id, name, public, active_version, created_at, timeout_ms, fuel, memory_bytes, concurrency, forward_authorization"
    };
}

/// Shared by the one-step writes and [`Store::create_function_with`].
const INSERT_FUNCTION: &str = concat!(
    "INSERT INTO functions (tenant_id, name, public, created_at) VALUES ($1, $2, $3, $4) RETURNING ",
    function_cols!()
);
const UPDATE_FUNCTION: &str = concat!(
    "UPDATE functions SET public = $1, timeout_ms = $2, fuel = $3, memory_bytes = $4, concurrency = $5 \
     WHERE id = $6 RETURNING ",
    function_cols!()
);
const SET_FORWARD_AUTHORIZATION: &str = concat!(
    "UPDATE functions SET forward_authorization = $1 WHERE id = $2 RETURNING ",
    function_cols!()
);
// The primary key (function_id, version) makes a concurrent save fail rather than share a
// number; the caller may retry.
const INSERT_VERSION: &str = "INSERT INTO function_versions (function_id, version, source, sha256, author, created_at, size) \
     SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6 FROM function_versions WHERE function_id = $1 \
     RETURNING function_id, version, sha256, author, created_at, pinned";
/// Saves `$source` as the function's next version inside transaction `$tx`; evaluates to the
/// [`Version`].
macro_rules! insert_version {
    ($tx:ident, $function_id:expr, $source:expr, $author:expr) => {{
        let version: Version = sqlx::query_as(INSERT_VERSION)
            .bind($function_id)
            .bind($source)
            .bind(sha256_hex($source))
            .bind($author)
            .bind(now_ms())
            .bind(i64::try_from($source.len()).unwrap_or(i64::MAX))
            .fetch_one(&mut *$tx)
            .await
            .map_err(|e| StoreError::from_sqlx(e, "version"))?;
        version
    }};
}

/// Runs `$sql` (a `DELETE` of at most its last parameter's rows, bound to [`PRUNE_BATCH`]
/// after `$bind`s) on `$pool` until it deletes fewer than a batch; evaluates to how many it
/// deleted. Each batch is its own statement, so writers get their turn between them.
macro_rules! delete_in_batches {
    ($pool:expr, $sql:expr, $($bind:expr),+) => {{
        let mut deleted = 0u64;
        loop {
            let done = sqlx::query($sql)
                $(.bind($bind))+
                .bind(PRUNE_BATCH)
                .execute($pool)
                .await
                .map_err(StoreError::Database)?
                .rows_affected();
            deleted += done;
            if done < PRUNE_BATCH as u64 {
                break deleted;
            }
        }
    }};
}

/// Deletes, in batches, the records of `$column = $owner` past its newest `$keep` (by time, then
/// id); evaluates to how many.
macro_rules! keep_newest {
    ($pool:expr, $column:literal, $owner:expr, $keep:expr) => {{
        let oldest_kept: Option<(i64, i64)> = sqlx::query_as(concat!(
            "SELECT at, id FROM invocations WHERE ",
            $column,
            " = $1 \
             ORDER BY at DESC, id DESC LIMIT 1 OFFSET $2"
        ))
        .bind($owner)
        .bind(i64::from($keep.max(1)) - 1)
        .fetch_optional($pool)
        .await
        .map_err(StoreError::Database)?;
        match oldest_kept {
            Some((at, id)) => delete_in_batches!(
                $pool,
                concat!(
                    "DELETE FROM invocations WHERE id IN (SELECT id FROM invocations WHERE ",
                    $column,
                    " = $1 AND (at, id) < ($2, $3) LIMIT $4)"
                ),
                $owner,
                at,
                id
            ),
            None => 0,
        }
    }};
}

/// Locks tenant `$tenant` inside `$tx` (PostgreSQL: its row; SQLite: the write lock is held
/// already) so that its writers of versions take turns, and evaluates to the bytes of source
/// its versions hold.
macro_rules! lock_version_bytes {
    ($tx:ident, $tenant:expr) => {{
        sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
            .bind($tenant)
            .execute(&mut *$tx)
            .await
            .map_err(StoreError::Database)?;
        let (bytes,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(v.size), 0) AS BIGINT) FROM function_versions v \
             JOIN functions f ON f.id = v.function_id WHERE f.tenant_id = $1",
        )
        .bind($tenant)
        .fetch_one(&mut *$tx)
        .await
        .map_err(StoreError::Database)?;
        bytes
    }};
}

/// The refusal of a version that does not fit in its tenant's quota.
fn version_bytes_refusal(used: i64, size: i64, quota: u64) -> StoreError {
    StoreError::Quota(format!(
        "version storage quota: the tenant's versions hold {used} bytes, and this {size}-byte \
         script would take them past the quota of {quota} bytes (each function's live version \
         and newest versions are kept): delete functions or versions no longer needed"
    ))
}
const ACTIVATE_VERSION: &str = concat!(
    "UPDATE functions SET active_version = $1 WHERE id = $2 RETURNING ",
    function_cols!()
);

/// What [`Store::create_function_with`] creates.
#[derive(Debug, Clone, Copy)]
pub struct NewFunction<'a> {
    pub tenant_id: i64,
    pub name: &'a str,
    pub public: bool,
    pub limits: &'a LimitOverrides,
    /// The first version's source and author.
    pub first_version: Option<(&'a str, &'a str)>,
    /// Make the first version active.
    pub deploy: bool,
    /// See [`Function::forward_authorization`].
    pub forward_authorization: bool,
    /// The most bytes of source the tenant's versions may hold with the first one.
    pub max_version_bytes: u64,
}

macro_rules! route_select {
    () => {
        "SELECT t.id AS tenant_id, t.name AS tenant_name, f.id AS function_id, f.name AS function_name, \
         f.public, f.forward_authorization, v.version, v.source, f.timeout_ms, f.fuel, f.memory_bytes, f.concurrency, \
         t.max_timeout_ms, t.max_fuel, t.max_memory_bytes, t.max_concurrency \
         FROM functions f JOIN tenants t ON t.id = f.tenant_id \
         JOIN function_versions v ON v.function_id = f.id AND v.version = f.active_version"
    };
}

/// Creates the tenant's usage row if needed and locks it (PostgreSQL: a row lock; SQLite: the
/// write lock), so that concurrent writers of one tenant take turns; evaluates to the usage.
macro_rules! lock_kv_usage {
    ($tx:ident, $tenant:expr) => {{
        sqlx::query("INSERT INTO kv_usage (tenant_id, keys, bytes) VALUES ($1, 0, 0) ON CONFLICT (tenant_id) DO NOTHING")
            .bind($tenant)
            .execute(&mut *$tx)
            .await
            .map_err(StoreError::Database)?;
        let usage: (i64, i64) = sqlx::query_as(
            "UPDATE kv_usage SET keys = keys WHERE tenant_id = $1 RETURNING keys, bytes",
        )
        .bind($tenant)
        .fetch_one(&mut *$tx)
        .await
        .map_err(StoreError::Database)?;
        usage
    }};
}

macro_rules! store_kv_usage {
    ($tx:ident, $tenant:expr, $keys:expr, $bytes:expr) => {
        sqlx::query("UPDATE kv_usage SET keys = $2, bytes = $3 WHERE tenant_id = $1")
            .bind($tenant)
            .bind($keys)
            .bind($bytes)
            .execute(&mut *$tx)
            .await
            .map_err(StoreError::Database)?
    };
}

/// Variables of functions, to go with their routes.
macro_rules! schedule_cols {
    () => {
        "id, function_id, cron, time_zone, enabled, payload, next_run_at, running_until, skipped_ticks, created_at"
    };
}

macro_rules! env_select {
    () => {
        "SELECT e.function_id, e.name, e.value FROM env_vars e JOIN functions f ON f.id = e.function_id"
    };
}

type EnvRow = (i64, String, String);

fn with_env(rows: Vec<RouteRow>, env: Vec<EnvRow>) -> Vec<Route> {
    let mut by_function: std::collections::HashMap<
        i64,
        std::collections::BTreeMap<String, String>,
    > = std::collections::HashMap::new();
    for (function_id, name, value) in env {
        by_function
            .entry(function_id)
            .or_default()
            .insert(name, value);
    }
    rows.into_iter()
        .map(|row| {
            let mut route = Route::from(row);
            route.env = by_function.remove(&route.function_id).unwrap_or_default();
            route
        })
        .collect()
}

/// Records in one multi-row `INSERT`: 19 bound values each, well under SQLite's limit of
/// 32,766 variables in a statement (and PostgreSQL's 65,535).
const RECORDS_PER_STATEMENT: usize = 250;

macro_rules! impl_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl TenantStore for $store {
            async fn create_tenant(&self, name: &str) -> Result<Tenant> {
                // In a transaction: sqlx hands over a `RETURNING` row before SQLite's implicit
                // commit, and a failed commit (a full disk) would go unseen (sqlx#2099).
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let tenant = sqlx::query_as(concat!("INSERT INTO tenants (name, created_at) VALUES ($1, $2) RETURNING ", tenant_cols!()))
                    .bind(name)
                    .bind(now_ms())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| StoreError::from_sqlx(e, "tenant"))?;
                tx.commit().await.map_err(StoreError::Database)?;
                Ok(tenant)
            }

            async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
                sqlx::query_as(concat!("SELECT ", tenant_cols!(), " FROM tenants WHERE name = $1"))
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::Database)
            }

            async fn tenant(&self, id: i64) -> Result<Option<Tenant>> {
                sqlx::query_as(concat!("SELECT ", tenant_cols!(), " FROM tenants WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::Database)
            }

            async fn set_tenant_ceilings(&self, tenant_id: i64, ceilings: &LimitOverrides) -> Result<Tenant> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let tenant = sqlx::query_as(concat!(
                    "UPDATE tenants SET max_timeout_ms = $1, max_fuel = $2, max_memory_bytes = $3, max_concurrency = $4 \
                     WHERE id = $5 RETURNING ",
                    tenant_cols!()
                ))
                .bind(ceilings.timeout_ms)
                .bind(ceilings.fuel)
                .bind(ceilings.memory_bytes)
                .bind(ceilings.concurrency)
                .bind(tenant_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| StoreError::from_sqlx(e, "tenant"))?;
                self.commit_announcing(tx, RouteEvent::Tenant(tenant_id)).await?;
                Ok(tenant)
            }

            async fn set_sub_minute_schedules(&self, tenant_id: i64, allowed: bool) -> Result<Tenant> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let tenant = sqlx::query_as(concat!(
                    "UPDATE tenants SET sub_minute_schedules = $1 WHERE id = $2 RETURNING ",
                    tenant_cols!()
                ))
                .bind(allowed)
                .bind(tenant_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| StoreError::from_sqlx(e, "tenant"))?;
                tx.commit().await.map_err(StoreError::Database)?;
                Ok(tenant)
            }

            async fn delete_tenant(&self, tenant_id: i64) -> Result<()> {
                delete_in_batches!(
                    &self.pool,
                    "DELETE FROM invocations WHERE id IN (SELECT id FROM invocations WHERE tenant_id = $1 LIMIT $2)",
                    tenant_id
                );
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let gone = sqlx::query("DELETE FROM tenants WHERE id = $1")
                    .bind(tenant_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::Database)?
                    .rows_affected();
                if gone == 0 {
                    return Err(StoreError::NotFound("tenant"));
                }
                // Its routes, tokens and schedules: every cache reloads.
                self.commit_announcing(tx, RouteEvent::Resync).await
            }

            async fn list_tenants(&self) -> Result<Vec<Tenant>> {
                sqlx::query_as(concat!("SELECT ", tenant_cols!(), " FROM tenants ORDER BY name"))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::Database)
            }

            async fn create_token(&self, tenant_id: Option<i64>, name: &str, hash: &str, admin: bool) -> Result<Token> {
                // In a transaction, as in `create_tenant`.
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let token: Token = sqlx::query_as(
                    "INSERT INTO tokens (id, tenant_id, name, hash, admin, created_at) VALUES ($6, $1, $2, $3, $4, $5) \
                     RETURNING id, tenant_id, name, admin, created_at, revoked_at",
                )
                .bind(tenant_id)
                .bind(name)
                .bind(hash)
                .bind(admin)
                .bind(now_ms())
                .bind(random_id())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| StoreError::from_sqlx(e, "token"))?;
                // Every token cache learns of it (a node checks tokens from memory).
                self.commit_announcing(tx, RouteEvent::Token(token.id)).await?;
                Ok(token)
            }

            async fn active_tokens(&self) -> Result<Vec<StoredToken>> {
                sqlx::query_as(
                    "SELECT id, tenant_id, name, admin, hash, revoked_at FROM tokens WHERE revoked_at IS NULL",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::Database)
            }

            async fn stored_token(&self, id: i64) -> Result<Option<StoredToken>> {
                sqlx::query_as("SELECT id, tenant_id, name, admin, hash, revoked_at FROM tokens WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::Database)
            }

            async fn token_by_hash(&self, hash: &str) -> Result<Option<Token>> {
                sqlx::query_as(
                    "SELECT id, tenant_id, name, admin, created_at, revoked_at FROM tokens \
                     WHERE hash = $1 AND revoked_at IS NULL",
                )
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::Database)
            }

            async fn list_tokens(&self, tenant_id: Option<i64>) -> Result<Vec<Token>> {
                let q = match tenant_id {
                    Some(_) => "SELECT id, tenant_id, name, admin, created_at, revoked_at FROM tokens WHERE tenant_id = $1 ORDER BY created_at, id",
                    None => "SELECT id, tenant_id, name, admin, created_at, revoked_at FROM tokens WHERE tenant_id IS NULL ORDER BY created_at, id",
                };
                let q = sqlx::query_as(q);
                let q = match tenant_id {
                    Some(t) => q.bind(t),
                    None => q,
                };
                q.fetch_all(&self.pool).await.map_err(StoreError::Database)
            }

            async fn revoke_token(&self, tenant_id: Option<i64>, id: i64) -> Result<()> {
                let q = match tenant_id {
                    Some(_) => "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL AND tenant_id = $3",
                    None => "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL AND tenant_id IS NULL",
                };
                let q = sqlx::query(q).bind(now_ms()).bind(id);
                let q = match tenant_id {
                    Some(t) => q.bind(t),
                    None => q,
                };
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                if tenant_id.is_none() {
                    // Revocations of admin tokens take turns (PostgreSQL: these row locks;
                    // SQLite: the write lock), so that two at once cannot leave none.
                    sqlx::query(
                        "UPDATE tokens SET revoked_at = revoked_at \
                         WHERE tenant_id IS NULL AND admin AND revoked_at IS NULL",
                    )
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::Database)?;
                }
                let done = q.execute(&mut *tx).await.map_err(StoreError::Database)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound("token"));
                }
                if tenant_id.is_none() {
                    let (left,): (i64,) = sqlx::query_as(
                        "SELECT COUNT(*) FROM tokens WHERE tenant_id IS NULL AND admin AND revoked_at IS NULL",
                    )
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::Database)?;
                    if left == 0 {
                        // Dropping the transaction rolls it back.
                        return Err(StoreError::Refused(
                            "this is the last admin token: create another before revoking it".into(),
                        ));
                    }
                }
                // Every token cache drops it, and the live tails it opened end.
                self.commit_announcing(tx, RouteEvent::Token(id)).await
            }
        }

        #[async_trait::async_trait]
        impl FunctionStore for $store {
            async fn create_function(&self, tenant_id: i64, name: &str, public: bool) -> Result<Function> {
                self.create_function_with(&NewFunction {
                    tenant_id,
                    name,
                    public,
                    limits: &LimitOverrides::default(),
                    first_version: None,
                    deploy: false,
                    forward_authorization: false,
                    max_version_bytes: u64::MAX,
                })
                .await
            }

            async fn create_function_with(&self, new: &NewFunction<'_>) -> Result<Function> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let mut function: Function = sqlx::query_as(INSERT_FUNCTION)
                    .bind(new.tenant_id)
                    .bind(new.name)
                    .bind(new.public)
                    .bind(now_ms())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| StoreError::from_sqlx(e, "function"))?;
                if *new.limits != LimitOverrides::default() {
                    function = sqlx::query_as(UPDATE_FUNCTION)
                        .bind(new.public)
                        .bind(new.limits.timeout_ms)
                        .bind(new.limits.fuel)
                        .bind(new.limits.memory_bytes)
                        .bind(new.limits.concurrency)
                        .bind(function.id)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| StoreError::from_sqlx(e, "function"))?;
                }
                if new.forward_authorization {
                    function = sqlx::query_as(SET_FORWARD_AUTHORIZATION)
                    .bind(true)
                    .bind(function.id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| StoreError::from_sqlx(e, "function"))?;
                }
                if let Some((source, author)) = new.first_version {
                    let used = lock_version_bytes!(tx, new.tenant_id);
                    let size = i64::try_from(source.len()).unwrap_or(i64::MAX);
                    if u64::try_from(used.saturating_add(size)).unwrap_or(u64::MAX) > new.max_version_bytes {
                        return Err(version_bytes_refusal(used, size, new.max_version_bytes));
                    }
                    let version = insert_version!(tx, function.id, source, author);
                    if new.deploy {
                        function = sqlx::query_as(ACTIVATE_VERSION)
                            .bind(version.version)
                            .bind(function.id)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(|e| StoreError::from_sqlx(e, "function"))?;
                    }
                }
                // Only a deployed version changes what the endpoints serve.
                if new.deploy && new.first_version.is_some() {
                    self.commit_announcing(tx, RouteEvent::Function(function.id)).await?;
                } else {
                    tx.commit().await.map_err(StoreError::Database)?;
                }
                Ok(function)
            }

            async fn function(&self, tenant_id: i64, name: &str) -> Result<Option<Function>> {
                sqlx::query_as(
                    concat!("SELECT ", function_cols!(), " FROM functions WHERE tenant_id = $1 AND name = $2"),
                )
                .bind(tenant_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::Database)
            }

            async fn list_functions(&self, tenant_id: i64) -> Result<Vec<Function>> {
                sqlx::query_as(
                    concat!("SELECT ", function_cols!(), " FROM functions WHERE tenant_id = $1 ORDER BY name"),
                )
                .bind(tenant_id)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::Database)
            }

            async fn update_function(&self, function_id: i64, public: bool, limits: &LimitOverrides) -> Result<Function> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let function = sqlx::query_as(UPDATE_FUNCTION)
                .bind(public)
                .bind(limits.timeout_ms)
                .bind(limits.fuel)
                .bind(limits.memory_bytes)
                .bind(limits.concurrency)
                .bind(function_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| StoreError::from_sqlx(e, "function"))?;
                self.commit_announcing(tx, RouteEvent::Function(function_id)).await?;
                Ok(function)
            }

            async fn set_forward_authorization(&self, function_id: i64, forward: bool) -> Result<Function> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let function = sqlx::query_as(SET_FORWARD_AUTHORIZATION)
                .bind(forward)
                .bind(function_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| StoreError::from_sqlx(e, "function"))?;
                self.commit_announcing(tx, RouteEvent::Function(function_id)).await?;
                Ok(function)
            }

            async fn delete_function(&self, tenant_id: i64, name: &str) -> Result<()> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let id: Option<i64> = sqlx::query_scalar("DELETE FROM functions WHERE tenant_id = $1 AND name = $2 RETURNING id")
                    .bind(tenant_id)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::Database)?;
                let Some(id) = id else {
                    return Err(StoreError::NotFound("function"));
                };
                self.commit_announcing(tx, RouteEvent::Function(id)).await?;
                Ok(())
            }

            async fn add_version(&self, function_id: i64, source: &str, author: &str) -> Result<Version> {
                // In a transaction, as in `create_tenant`.
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let version = insert_version!(tx, function_id, source, author);
                tx.commit().await.map_err(StoreError::Database)?;
                Ok(version)
            }

            async fn add_version_within(
                &self,
                tenant_id: i64,
                function_id: i64,
                source: &str,
                author: &str,
                quota: &VersionQuota,
            ) -> Result<SavedVersion> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let mut used = lock_version_bytes!(tx, tenant_id);
                let (mut count, newest): (i64, Option<i32>) = sqlx::query_as(
                    "SELECT COUNT(*), MAX(version) FROM function_versions WHERE function_id = $1",
                )
                .bind(function_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
                let (active,): (Option<i32>,) =
                    sqlx::query_as("SELECT active_version FROM functions WHERE id = $1")
                        .bind(function_id)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| StoreError::from_sqlx(e, "function"))?;
                let keep_from = newest.unwrap_or(0).saturating_sub(i32::try_from(quota.keep_newest).unwrap_or(i32::MAX));
                let prunable: Vec<(i32, i64)> = sqlx::query_as(
                    "SELECT version, size FROM function_versions WHERE function_id = $1 AND version <= $2 \
                     AND NOT pinned ORDER BY version",
                )
                .bind(function_id)
                .bind(keep_from)
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
                let size = i64::try_from(source.len()).unwrap_or(i64::MAX);
                let max_bytes = i64::try_from(quota.max_tenant_bytes).unwrap_or(i64::MAX);
                let max_count = i64::from(quota.max_per_function);
                let mut pruned = Vec::new();
                for (version, bytes) in prunable.into_iter().filter(|(v, _)| Some(*v) != active) {
                    if count < max_count && used.saturating_add(size) <= max_bytes {
                        break;
                    }
                    pruned.push(version);
                    count -= 1;
                    used -= bytes;
                }
                if count >= max_count {
                    return Err(StoreError::Quota(format!(
                        "version quota: a function keeps at most {max_count} versions, and none \
                         of this one's is old enough to prune (its live version, its pinned ones and \
                         its newest {} are kept): unpin some, prune the newest too \
                         (`picloud fn prune NAME --keep 0`), or delete the function",
                        quota.keep_newest
                    )));
                }
                if used.saturating_add(size) > max_bytes {
                    return Err(version_bytes_refusal(used, size, quota.max_tenant_bytes));
                }
                for version in &pruned {
                    sqlx::query("DELETE FROM function_versions WHERE function_id = $1 AND version = $2")
                        .bind(function_id)
                        .bind(version)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::Database)?;
                }
                let version = insert_version!(tx, function_id, source, author);
                tx.commit().await.map_err(StoreError::Database)?;
                Ok(SavedVersion { version, pruned })
            }

            async fn versions(&self, function_id: i64) -> Result<Vec<Version>> {
                sqlx::query_as(
                    "SELECT function_id, version, sha256, author, created_at, pinned FROM function_versions \
                     WHERE function_id = $1 ORDER BY version",
                )
                .bind(function_id)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::Database)
            }

            async fn set_version_pinned(&self, function_id: i64, version: i32, pinned: bool) -> Result<Version> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let found: Option<Version> = sqlx::query_as(
                    "UPDATE function_versions SET pinned = $1 WHERE function_id = $2 AND version = $3 \
                     RETURNING function_id, version, sha256, author, created_at, pinned",
                )
                .bind(pinned)
                .bind(function_id)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
                let Some(found) = found else {
                    return Err(StoreError::NotFound("version"));
                };
                tx.commit().await.map_err(StoreError::Database)?;
                Ok(found)
            }

            async fn prune_versions(&self, function_id: i64, keep: u32) -> Result<Vec<i32>> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let newest: Option<i32> = sqlx::query_scalar(
                    "SELECT MAX(version) FROM function_versions WHERE function_id = $1",
                )
                .bind(function_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
                let keep_from = newest.unwrap_or(0).saturating_sub(i32::try_from(keep).unwrap_or(i32::MAX));
                let pruned: Vec<i32> = sqlx::query_scalar(
                    "DELETE FROM function_versions WHERE function_id = $1 AND version <= $2 AND NOT pinned \
                     AND version <> COALESCE((SELECT active_version FROM functions WHERE id = $1), 0) \
                     RETURNING version",
                )
                .bind(function_id)
                .bind(keep_from)
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
                tx.commit().await.map_err(StoreError::Database)?;
                let mut pruned = pruned;
                pruned.sort_unstable();
                Ok(pruned)
            }

            async fn version_source(&self, function_id: i64, version: i32) -> Result<Option<String>> {
                sqlx::query_scalar("SELECT source FROM function_versions WHERE function_id = $1 AND version = $2")
                    .bind(function_id)
                    .bind(version)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::Database)
            }

            async fn deploy(&self, function_id: i64, version: i32) -> Result<Function> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let exists: Option<i32> = sqlx::query_scalar(
                    "SELECT version FROM function_versions WHERE function_id = $1 AND version = $2",
                )
                .bind(function_id)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
                if exists.is_none() {
                    return Err(StoreError::NotFound("version"));
                }
                let function = sqlx::query_as(ACTIVATE_VERSION)
                .bind(version)
                .bind(function_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| StoreError::from_sqlx(e, "function"))?;
                self.commit_announcing(tx, RouteEvent::Function(function_id)).await?;
                Ok(function)
            }

            async fn set_env(&self, function_id: i64, name: &str, value: &str, secret: bool) -> Result<()> {
                // A secret is sealed when this server has the key (see `secrets`).
                let stored = match (self.secrets.as_deref().and_then(KeySource::key), secret) {
                    (Some(key), true) => key
                        .seal(function_id, name, value)
                        .map_err(|e| StoreError::Refused(e.to_string()))?,
                    _ => value.to_string(),
                };
                let value = stored.as_str();
                // Announced: the variables travel with the function's route.
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                sqlx::query(
                    "INSERT INTO env_vars (function_id, name, value, secret) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (function_id, name) DO UPDATE SET value = excluded.value, secret = excluded.secret",
                )
                .bind(function_id)
                .bind(name)
                .bind(value)
                .bind(secret)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
                self.commit_announcing(tx, RouteEvent::Function(function_id)).await
            }

            async fn unset_env(&self, function_id: i64, name: &str) -> Result<()> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let done = sqlx::query("DELETE FROM env_vars WHERE function_id = $1 AND name = $2")
                    .bind(function_id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::Database)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound("environment variable"));
                }
                self.commit_announcing(tx, RouteEvent::Function(function_id)).await
            }

            async fn list_env(&self, function_id: i64) -> Result<Vec<EnvVar>> {
                let rows: Vec<(String, String, bool)> = sqlx::query_as(
                    "SELECT name, value, secret FROM env_vars WHERE function_id = $1 ORDER BY name",
                )
                .bind(function_id)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::Database)?;
                Ok(rows
                    .into_iter()
                    .map(|(name, value, secret)| EnvVar {
                        name,
                        value: (!secret).then_some(value),
                        secret,
                    })
                    .collect())
            }

            async fn env_values(&self, function_id: i64) -> Result<Vec<(String, String)>> {
                let rows: Vec<(String, String)> =
                    sqlx::query_as("SELECT name, value FROM env_vars WHERE function_id = $1 ORDER BY name")
                        .bind(function_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(StoreError::Database)?;
                let key = self.secrets.as_deref().and_then(KeySource::key);
                Ok(rows
                    .into_iter()
                    .filter_map(|(name, value)| {
                        crate::secrets::opened(key, function_id, &name, value).map(|v| (name, v))
                    })
                    .collect())
            }

            async fn seal_secrets(&self) -> Result<u64> {
                let Some(key) = self.secrets.as_deref().and_then(KeySource::key) else {
                    return Ok(0);
                };
                let rows: Vec<(i64, String, String)> =
                    sqlx::query_as("SELECT function_id, name, value FROM env_vars WHERE secret")
                        .fetch_all(&self.pool)
                        .await
                        .map_err(StoreError::Database)?;
                let mut sealed = 0;
                for (function_id, name, value) in rows {
                    if value.starts_with(crate::secrets::SEALED_PREFIX) {
                        if key.open(function_id, &name, &value).is_err() {
                            return Err(StoreError::Refused(format!(
                                "the secret key {} does not open the secrets in the database \
                                 (variable {name} of function {function_id}): start with the key \
                                 they were sealed with (PICLOUD_SECRET_KEY_FILE; see \
                                 docs/operations.md, \"Secrets at rest\")",
                                key.path().display()
                            )));
                        }
                        continue;
                    }
                    let stored = key
                        .seal(function_id, &name, &value)
                        .map_err(|e| StoreError::Refused(e.to_string()))?;
                    sqlx::query("UPDATE env_vars SET value = $1 WHERE function_id = $2 AND name = $3 AND value = $4")
                        .bind(stored)
                        .bind(function_id)
                        .bind(&name)
                        .bind(&value)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::Database)?;
                    sealed += 1;
                }
                Ok(sealed)
            }
        }

        #[async_trait::async_trait]
        impl RouteStore for $store {
            async fn routes(&self) -> Result<Vec<Route>> {
                let rows: Vec<RouteRow> = sqlx::query_as(route_select!())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::Database)?;
                let env: Vec<EnvRow> = sqlx::query_as(concat!(env_select!(), " WHERE f.active_version IS NOT NULL"))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::Database)?;
                Ok(with_env(rows, self.opened(env)))
            }

            async fn function_route(&self, function_id: i64) -> Result<Option<Route>> {
                let row: Option<RouteRow> = sqlx::query_as(concat!(route_select!(), " WHERE f.id = $1"))
                    .bind(function_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::Database)?;
                let Some(row) = row else { return Ok(None) };
                let env: Vec<EnvRow> = sqlx::query_as(concat!(env_select!(), " WHERE f.id = $1"))
                    .bind(function_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::Database)?;
                Ok(with_env(vec![row], self.opened(env)).pop())
            }

            async fn tenant_routes(&self, tenant_id: i64) -> Result<Vec<Route>> {
                let rows: Vec<RouteRow> = sqlx::query_as(concat!(route_select!(), " WHERE t.id = $1"))
                    .bind(tenant_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::Database)?;
                let env: Vec<EnvRow> = sqlx::query_as(concat!(env_select!(), " WHERE f.tenant_id = $1"))
                    .bind(tenant_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::Database)?;
                Ok(with_env(rows, self.opened(env)))
            }
        }

        #[async_trait::async_trait]
        impl RecordStore for $store {
            async fn insert_records(&self, records: &[InvocationRecord]) -> Result<()> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                // Records of a function deleted since they were queued go with it (they would
                // fail the whole batch, again and again).
                let mut ids: Vec<i64> = records.iter().map(|r| r.function_id).collect();
                ids.sort_unstable();
                ids.dedup();
                let mut select = sqlx::QueryBuilder::new("SELECT id FROM functions WHERE id IN (");
                let mut list = select.separated(", ");
                for id in &ids {
                    list.push_bind(*id);
                }
                select.push(")");
                let mut live: Vec<i64> = select
                    .build_query_scalar()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(StoreError::Database)?;
                live.sort_unstable();
                let kept: Vec<&InvocationRecord> = records
                    .iter()
                    .filter(|r| live.binary_search(&r.function_id).is_ok())
                    .collect();
                if kept.is_empty() {
                    return tx.commit().await.map_err(StoreError::Database);
                }
                let records = kept;
                // One statement per chunk, not per record: under a flood a statement per row
                // costs the writer (and on SQLite, the request cores) most of its time.
                for chunk in records.chunks(RECORDS_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO invocations (id, tenant_id, function_id, version, trigger_kind, outcome, status, at, \
                         duration_us, fuel, peak_memory, message, logs, logs_truncated, record_key, method, path, schedule_id, request) ",
                    );
                    insert.push_values(chunk, |mut row, r| {
                        let logs = serde_json::to_string(&r.logs).unwrap_or_else(|_| "[]".into());
                        // Chosen at the record's making; 0 only in a spool line of an earlier
                        // version.
                        row.push_bind(if r.id > 0 { r.id } else { random_id() })
                            .push_bind(r.tenant_id)
                            .push_bind(r.function_id)
                            .push_bind(r.version)
                            .push_bind(r.trigger.as_str())
                            .push_bind(r.outcome.clone())
                            .push_bind(i32::from(r.status))
                            .push_bind(r.at)
                            .push_bind(i64::try_from(r.duration_us).unwrap_or(i64::MAX))
                            .push_bind(i64::try_from(r.fuel_used).unwrap_or(i64::MAX))
                            .push_bind(i64::try_from(r.peak_memory_bytes).unwrap_or(i64::MAX))
                            .push_bind(r.message.clone())
                            .push_bind(logs)
                            .push_bind(r.logs_truncated)
                            .push_bind((!r.key.is_empty()).then(|| r.key.clone()))
                            .push_bind(r.method.clone())
                            .push_bind(r.path.clone())
                            .push_bind(r.schedule_id)
                            .push_bind(r.request.as_ref().and_then(|q| serde_json::to_string(q).ok()));
                    });
                    // A record written again (replayed from the spool after a crash) is
                    // already here.
                    insert.push(" ON CONFLICT (record_key) DO NOTHING");
                    insert.build().execute(&mut *tx).await.map_err(StoreError::Database)?;
                }
                tx.commit().await.map_err(StoreError::Database)
            }

            async fn records(&self, function_id: i64, filter: &RecordFilter) -> Result<Vec<InvocationRecord>> {
                let rows: Vec<RecordRow> = sqlx::query_as(
                    "SELECT id, tenant_id, function_id, version, trigger_kind, outcome, status, at, duration_us, fuel, \
                     peak_memory, message, logs, logs_truncated, method, path, schedule_id, request FROM invocations \
                     WHERE function_id = $1 AND ($2 IS NULL OR outcome = $2 OR ($2 = 'error' AND outcome <> 'ok')) AND ($3 IS NULL OR at >= $3) \
                     AND ($4 IS NULL OR at < $4) AND ($5 IS NULL OR (at, id) < (SELECT at, id FROM invocations WHERE id = $5)) \
                     ORDER BY at DESC, id DESC LIMIT $6",
                )
                .bind(function_id)
                .bind(&filter.outcome)
                .bind(filter.since)
                .bind(filter.until)
                .bind(filter.before_id)
                .bind(i64::from(filter.limit))
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::Database)?;
                Ok(rows.into_iter().map(InvocationRecord::from).collect())
            }

            async fn record_samples(&self, function_id: i64, since: i64) -> Result<Vec<RecordSample>> {
                let rows: Vec<SampleRow> = sqlx::query_as(
                    "SELECT at, outcome, duration_us FROM invocations \
                     WHERE function_id = $1 AND at >= $2 AND trigger_kind <> 'test'",
                )
                .bind(function_id)
                .bind(since)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::Database)?;
                Ok(rows.into_iter().map(RecordSample::from).collect())
            }

            async fn prune_records(&self, older_than: i64, per_function: u32, per_tenant: u32) -> Result<u64> {
                // Function by function, in batches of PRUNE_BATCH rows, each its own statement:
                // no statement walks the whole table, and writers (records, API calls) get
                // their turn between batches.
                let functions: Vec<(i64,)> = sqlx::query_as("SELECT id FROM functions")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::Database)?;
                let mut pruned = 0;
                for (function_id,) in functions {
                    pruned += delete_in_batches!(
                        &self.pool,
                        "DELETE FROM invocations WHERE id IN (SELECT id FROM invocations \
                         WHERE function_id = $1 AND at < $2 LIMIT $3)",
                        function_id,
                        older_than
                    );
                    pruned += keep_newest!(&self.pool, "function_id", function_id, per_function);
                }
                // Then each tenant, all its functions together: the oldest go first.
                let tenants: Vec<(i64,)> = sqlx::query_as("SELECT id FROM tenants")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::Database)?;
                for (tenant_id,) in tenants {
                    pruned += keep_newest!(&self.pool, "tenant_id", tenant_id, per_tenant);
                }
                Ok(pruned)
            }
        }

        #[async_trait::async_trait]
        impl ScheduleStore for $store {
            async fn create_schedule(
                &self,
                function_id: i64,
                cron: &str,
                time_zone: &str,
                enabled: bool,
                payload: Option<&str>,
                next_run_at: i64,
            ) -> Result<Schedule> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let schedule: Schedule = sqlx::query_as(concat!(
                    "INSERT INTO schedules (id, function_id, cron, time_zone, enabled, payload, next_run_at, created_at) \
                     VALUES ($8, $1, $2, $3, $4, $5, $6, $7) RETURNING ",
                    schedule_cols!()
                ))
                .bind(function_id)
                .bind(cron)
                .bind(time_zone)
                .bind(enabled)
                .bind(payload)
                .bind(next_run_at)
                .bind(now_ms())
                .bind(random_id())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| StoreError::from_sqlx(e, "function"))?;
                self.commit_announcing(tx, RouteEvent::Schedule(schedule.id)).await?;
                Ok(schedule)
            }

            async fn schedules(&self, function_id: i64) -> Result<Vec<Schedule>> {
                sqlx::query_as(concat!("SELECT ", schedule_cols!(), " FROM schedules WHERE function_id = $1 ORDER BY created_at, id"))
                    .bind(function_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::Database)
            }

            async fn schedule(&self, id: i64) -> Result<Option<Schedule>> {
                sqlx::query_as(concat!("SELECT ", schedule_cols!(), " FROM schedules WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::Database)
            }

            async fn enabled_schedules(&self) -> Result<Vec<Schedule>> {
                sqlx::query_as(concat!("SELECT ", schedule_cols!(), " FROM schedules WHERE enabled ORDER BY id"))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::Database)
            }

            async fn set_schedule_enabled(
                &self,
                function_id: i64,
                id: i64,
                enabled: bool,
                next_run_at: i64,
            ) -> Result<Schedule> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let schedule: Option<Schedule> = sqlx::query_as(concat!(
                    "UPDATE schedules SET enabled = $3, \
                     next_run_at = CASE WHEN $3 AND NOT enabled THEN $4 ELSE next_run_at END \
                     WHERE id = $1 AND function_id = $2 RETURNING ",
                    schedule_cols!()
                ))
                .bind(id)
                .bind(function_id)
                .bind(enabled)
                .bind(next_run_at)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
                let schedule = schedule.ok_or(StoreError::NotFound("schedule"))?;
                self.commit_announcing(tx, RouteEvent::Schedule(id)).await?;
                Ok(schedule)
            }

            async fn delete_schedule(&self, function_id: i64, id: i64) -> Result<()> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let done = sqlx::query("DELETE FROM schedules WHERE id = $1 AND function_id = $2")
                    .bind(id)
                    .bind(function_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::Database)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound("schedule"));
                }
                self.commit_announcing(tx, RouteEvent::Schedule(id)).await
            }

            async fn claim_ticks(&self, claim: &ScheduleClaim<'_>) -> Result<Option<u64>> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let won = sqlx::query(
                    "UPDATE schedules SET next_run_at = $3, running_until = $4, \
                     skipped_ticks = skipped_ticks + $5 \
                     WHERE id = $1 AND enabled AND next_run_at = $2 \
                     AND (running_until IS NULL OR running_until < $6)",
                )
                .bind(claim.schedule_id)
                .bind(claim.expected_next)
                .bind(claim.following)
                .bind(claim.lease_until)
                .bind(i64::try_from(claim.skipped).unwrap_or(i64::MAX))
                .bind(claim.now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
                if won.rows_affected() != 1 {
                    return Ok(None);
                }
                // Runs a dead scheduler left unfinished: their lease lapsed, or this claim
                // could not have been made.
                let abandoned = sqlx::query(
                    "UPDATE schedule_runs SET outcome = 'abandoned', finished_at = $2 \
                     WHERE schedule_id = $1 AND outcome IS NULL",
                )
                .bind(claim.schedule_id)
                .bind(claim.now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::Database)?
                .rows_affected();
                for &(due_at, backfill) in claim.runs {
                    sqlx::query(
                        "INSERT INTO schedule_runs (schedule_id, due_at, claimed_at, backfill, owner) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(claim.schedule_id)
                    .bind(due_at)
                    .bind(claim.now)
                    .bind(backfill)
                    .bind(claim.owner)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::from_sqlx(e, "schedule run"))?;
                }
                tx.commit().await.map_err(StoreError::Database)?;
                Ok(Some(abandoned))
            }

            async fn finish_run(&self, schedule_id: i64, due_at: i64, outcome: &str, finished_at: i64) -> Result<()> {
                sqlx::query(
                    "UPDATE schedule_runs SET outcome = $3, finished_at = $4 \
                     WHERE schedule_id = $1 AND due_at = $2 AND outcome IS NULL",
                )
                .bind(schedule_id)
                .bind(due_at)
                .bind(outcome)
                .bind(finished_at)
                .execute(&self.pool)
                .await
                .map_err(StoreError::Database)?;
                Ok(())
            }

            async fn release_schedule(&self, schedule_id: i64, lease_until: i64) -> Result<()> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                sqlx::query("UPDATE schedules SET running_until = NULL WHERE id = $1 AND running_until = $2")
                    .bind(schedule_id)
                    .bind(lease_until)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::Database)?;
                // Announced, so that other schedulers waiting out the lease look again now.
                self.commit_announcing(tx, RouteEvent::Schedule(schedule_id)).await
            }

            async fn schedule_runs(&self, schedule_id: i64, limit: u32) -> Result<Vec<ScheduleRun>> {
                sqlx::query_as(
                    "SELECT schedule_id, due_at, claimed_at, backfill, owner, finished_at, outcome \
                     FROM schedule_runs WHERE schedule_id = $1 ORDER BY due_at DESC LIMIT $2",
                )
                .bind(schedule_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::Database)
            }
        }

        #[async_trait::async_trait]
        impl KvStore for $store {
            async fn kv_get(&self, tenant_id: i64, key: &str) -> Result<Option<String>> {
                sqlx::query_scalar("SELECT value FROM kv WHERE tenant_id = $1 AND key = $2")
                    .bind(tenant_id)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::Database)
            }

            async fn kv_set(&self, tenant_id: i64, key: &str, value: &str, quota: &KvQuota) -> Result<()> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let (keys, bytes) = lock_kv_usage!(tx, tenant_id);
                let old: Option<i64> = sqlx::query_scalar("SELECT bytes FROM kv WHERE tenant_id = $1 AND key = $2")
                    .bind(tenant_id)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::Database)?;
                let size = (key.len() + value.len()) as i64;
                let keys = keys + i64::from(old.is_none());
                let bytes = bytes - old.unwrap_or(0) + size;
                if keys as u64 > quota.max_keys {
                    return Err(StoreError::Quota(format!(
                        "the tenant's key-value store is full: it may hold {} keys", quota.max_keys
                    )));
                }
                if bytes as u64 > quota.max_bytes {
                    return Err(StoreError::Quota(format!(
                        "the tenant's key-value store is full: it may hold {} bytes of keys and values \
                         ({} would be used)", quota.max_bytes, bytes
                    )));
                }
                sqlx::query(
                    "INSERT INTO kv (tenant_id, key, value, bytes, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value, bytes = excluded.bytes, \
                     updated_at = excluded.updated_at",
                )
                .bind(tenant_id)
                .bind(key)
                .bind(value)
                .bind(size)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::Database)?;
                store_kv_usage!(tx, tenant_id, keys, bytes);
                tx.commit().await.map_err(StoreError::Database)
            }

            async fn kv_delete(&self, tenant_id: i64, key: &str) -> Result<bool> {
                let mut tx = self.begin().await.map_err(StoreError::Database)?;
                let (keys, bytes) = lock_kv_usage!(tx, tenant_id);
                let old: Option<i64> = sqlx::query_scalar("DELETE FROM kv WHERE tenant_id = $1 AND key = $2 RETURNING bytes")
                    .bind(tenant_id)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::Database)?;
                let Some(old) = old else {
                    return Ok(false);
                };
                store_kv_usage!(tx, tenant_id, keys - 1, bytes - old);
                tx.commit().await.map_err(StoreError::Database)?;
                Ok(true)
            }

            async fn kv_list(&self, tenant_id: i64, prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<String>> {
                sqlx::query_scalar(
                    "SELECT key FROM kv WHERE tenant_id = $1 AND key >= $2 AND key > $3 \
                     AND substr(key, 1, length($2)) = $2 ORDER BY key LIMIT $4",
                )
                .bind(tenant_id)
                .bind(prefix)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::Database)
            }

            async fn kv_usage(&self, tenant_id: i64) -> Result<KvUsage> {
                let row: Option<(i64, i64)> = sqlx::query_as("SELECT keys, bytes FROM kv_usage WHERE tenant_id = $1")
                    .bind(tenant_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::Database)?;
                let (keys, bytes) = row.unwrap_or_default();
                Ok(KvUsage { keys: keys as u64, bytes: bytes as u64 })
            }
        }
    };
}

/// Migration 10's second half, on either database: each schedule it marked gets the
/// `next_run_at` of cron(5)'s days of week ([`crate::schedule_spec::recheck_weekdays`]), then loses
/// the mark. A compare-and-set on the old `next_run_at`: a server starting beside a running
/// scheduler changes nothing that scheduler has claimed since.
macro_rules! recheck_weekdays {
    ($pool:expr) => {{
        let marked: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT id, cron, time_zone, next_run_at FROM schedules WHERE weekdays_recheck",
        )
        .fetch_all($pool)
        .await
        .map_err(StoreError::Database)?;
        let now = now_ms();
        for (id, cron, time_zone, next_run_at) in marked {
            let next = crate::schedule_spec::recheck_weekdays(&cron, &time_zone, next_run_at, now);
            if let Some(next) = next {
                tracing::info!(
                    schedule = id,
                    %cron,
                    from = next_run_at,
                    to = next,
                    "schedule's next run recomputed for cron(5) weekdays"
                );
            }
            sqlx::query(
                "UPDATE schedules SET next_run_at = $1, weekdays_recheck = FALSE \
                 WHERE id = $2 AND next_run_at = $3 AND weekdays_recheck",
            )
            .bind(next.unwrap_or(next_run_at))
            .bind(id)
            .bind(next_run_at)
            .execute($pool)
            .await
            .map_err(StoreError::Database)?;
        }
    }};
}

/// The store on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Seals secret variables; without it they are stored in the clear (tests of the store).
    secrets: Option<Arc<KeySource>>,
}

impl PgStore {
    /// Connects and runs the PostgreSQL migrations (sqlx takes an advisory lock, so several
    /// managers may start at once; an edited migration stops start-up).
    ///
    /// # Errors
    ///
    /// When the database cannot be reached or a migration fails.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .map_err(StoreError::Database)?;
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await?;
        recheck_weekdays!(&pool);
        Ok(Self {
            pool,
            secrets: None,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The store in an embedded SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    events: broadcast::Sender<RouteEvent>,
    /// As [`PgStore`]'s.
    secrets: Option<Arc<KeySource>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the SQLite file at `path` in WAL mode with foreign keys on,
    /// and runs the SQLite migrations.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or a migration fails.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(StoreError::Database)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(StoreError::Database)?;
        sqlx::migrate!("../../migrations/sqlite").run(&pool).await?;
        recheck_weekdays!(&pool);
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            pool,
            events,
            secrets: None,
        })
    }
}

impl PgStore {
    /// Starts a transaction. PostgreSQL takes row locks as statements reach them, so the
    /// default `BEGIN` is right.
    async fn begin(
        &self,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    /// Commits `tx` with `event` announced to every listener from inside it: the notification
    /// is delivered if and when the transaction commits.
    async fn commit_announcing(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        event: RouteEvent,
    ) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::routes::CHANNEL)
            .bind(event.payload())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Database)?;
        tx.commit().await.map_err(StoreError::Database)
    }
}

impl SqliteStore {
    /// Starts a write transaction with `BEGIN IMMEDIATE`. A deferred `BEGIN` reads from a
    /// snapshot and upgrades to a writer at its first write; if another connection (the record
    /// writer, say) committed in between, SQLite refuses the upgrade at once with "database is
    /// locked" — the busy timeout does not apply. Taking the write lock up front makes a second
    /// writer wait out the busy timeout instead.
    async fn begin(
        &self,
    ) -> std::result::Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// Commits `tx`, then announces `event` in-process: an embedded database has one process.
    async fn commit_announcing(
        &self,
        tx: sqlx::Transaction<'_, sqlx::Sqlite>,
        event: RouteEvent,
    ) -> Result<()> {
        tx.commit().await.map_err(StoreError::Database)?;
        // No subscriber is fine: nobody runs endpoints.
        let _ = self.events.send(event);
        Ok(())
    }

    /// Route changes committed through this store (and its clones) from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RouteEvent> {
        self.events.subscribe()
    }
}

impl_store!(PgStore);
impl_store!(SqliteStore);

/// Either store, chosen at start-up: PostgreSQL when a database URL is configured, else SQLite.
#[derive(Debug, Clone)]
pub enum AnyStore {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl AnyStore {
    /// This store, sealing secret variables with `key` from now on (and opening them).
    #[must_use]
    pub fn with_secret_key(self, key: Option<Arc<KeySource>>) -> Self {
        match self {
            Self::Postgres(mut s) => {
                s.secrets = key;
                Self::Postgres(s)
            }
            Self::Sqlite(mut s) => {
                s.secrets = key;
                Self::Sqlite(s)
            }
        }
    }
}

/// Opens the sealed values of `env` (see [`crate::secrets`]); one that does not open is left
/// out.
fn open_env(key: Option<&SecretKey>, env: Vec<EnvRow>) -> Vec<EnvRow> {
    env.into_iter()
        .filter_map(|(function_id, name, value)| {
            crate::secrets::opened(key, function_id, &name, value).map(|v| (function_id, name, v))
        })
        .collect()
}

impl PgStore {
    fn opened(&self, env: Vec<EnvRow>) -> Vec<EnvRow> {
        open_env(self.secrets.as_deref().and_then(KeySource::key), env)
    }
}

impl SqliteStore {
    fn opened(&self, env: Vec<EnvRow>) -> Vec<EnvRow> {
        open_env(self.secrets.as_deref().and_then(KeySource::key), env)
    }
}

/// The store chosen at start-up, as the [`Store`] it is: calls go to PostgreSQL or SQLite without
/// a method written twice.
impl std::ops::Deref for AnyStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Postgres(s) => s,
            Self::Sqlite(s) => s,
        }
    }
}
