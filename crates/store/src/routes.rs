//! What function endpoints need to know, and how they learn of changes.
//!
//! A [`Route`] is everything an endpoint needs to run a function: its active source, whether it
//! is public, its limits in force. The orchestrator keeps every route in memory and reloads one
//! when told it changed: the store announces each committed change as a [`RouteEvent`] — on
//! PostgreSQL with `NOTIFY` inside the changing transaction (so every node hears of it, and only
//! if it committed), on SQLite through an in-process channel. Notifications sent while a
//! listener is disconnected are lost, so a reconnect is announced as [`RouteEvent::Resync`]: a
//! full reload.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::limits::{FunctionLimits, LimitOverrides};
use crate::store::{AnyStore, StoreError};

/// The PostgreSQL channel route changes are announced on.
pub const CHANNEL: &str = "picloud_routes";

/// A function an endpoint can run: it has an active version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub tenant_id: i64,
    pub tenant: String,
    pub function_id: i64,
    pub function: String,
    pub public: bool,
    /// The script sees the caller's `Authorization` header (never a platform token).
    pub forward_authorization: bool,
    pub version: i32,
    pub source: String,
    /// In force: the function's choices over the defaults, capped by its tenant's ceilings.
    pub limits: FunctionLimits,
    /// The function's variables and secrets (`env(name)` in the script).
    pub env: BTreeMap<String, String>,
}

/// A route row as selected (see `route_select!` in the store).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RouteRow {
    tenant_id: i64,
    tenant_name: String,
    function_id: i64,
    function_name: String,
    public: bool,
    forward_authorization: bool,
    version: i32,
    source: String,
    timeout_ms: Option<i64>,
    fuel: Option<i64>,
    memory_bytes: Option<i64>,
    concurrency: Option<i64>,
    max_timeout_ms: Option<i64>,
    max_fuel: Option<i64>,
    max_memory_bytes: Option<i64>,
    max_concurrency: Option<i64>,
}

impl From<RouteRow> for Route {
    fn from(r: RouteRow) -> Self {
        let chosen = LimitOverrides {
            timeout_ms: r.timeout_ms,
            fuel: r.fuel,
            memory_bytes: r.memory_bytes,
            concurrency: r.concurrency,
        };
        let ceilings = LimitOverrides {
            timeout_ms: r.max_timeout_ms,
            fuel: r.max_fuel,
            memory_bytes: r.max_memory_bytes,
            concurrency: r.max_concurrency,
        };
        Self {
            tenant_id: r.tenant_id,
            tenant: r.tenant_name,
            function_id: r.function_id,
            function: r.function_name,
            public: r.public,
            forward_authorization: r.forward_authorization,
            version: r.version,
            source: r.source,
            limits: FunctionLimits::resolve(&chosen, &ceilings),
            env: BTreeMap::new(),
        }
    }
}

/// A committed change to what endpoints run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteEvent {
    /// This function's route changed (deployed, rolled back, made private, limits, deleted).
    Function(i64),
    /// Every route of this tenant changed (its ceilings).
    Tenant(i64),
    /// A schedule was added, paused, resumed or deleted: schedulers reload it. Endpoints
    /// ignore it.
    Schedule(i64),
    /// A token was created or revoked: token caches reload it (and the live tails it opened
    /// end when it is revoked).
    Token(i64),
    /// Changes may have been missed: reload everything.
    Resync,
}

impl RouteEvent {
    pub(crate) fn payload(self) -> String {
        match self {
            Self::Function(id) => format!("f:{id}"),
            Self::Tenant(id) => format!("t:{id}"),
            Self::Schedule(id) => format!("s:{id}"),
            Self::Token(id) => format!("k:{id}"),
            Self::Resync => "resync".into(),
        }
    }

    fn parse(payload: &str) -> Self {
        let id = |s: &str| s.parse::<i64>().ok();
        match payload.split_once(':') {
            Some(("f", n)) => id(n).map_or(Self::Resync, Self::Function),
            Some(("t", n)) => id(n).map_or(Self::Resync, Self::Tenant),
            Some(("s", n)) => id(n).map_or(Self::Resync, Self::Schedule),
            Some(("k", n)) => id(n).map_or(Self::Resync, Self::Token),
            _ => Self::Resync,
        }
    }
}

/// A subscription to route changes; see [`AnyStore::watch_routes`].
#[derive(Debug)]
pub struct RouteWatch {
    inner: WatchInner,
}

#[derive(Debug)]
enum WatchInner {
    Postgres {
        pool: sqlx::PgPool,
        listener: Option<PgListener>,
    },
    Sqlite(broadcast::Receiver<RouteEvent>),
}

async fn pg_listener(pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

impl AnyStore {
    /// Subscribes to route changes. Subscribe before loading the routes, so that no change
    /// falls between the two.
    ///
    /// # Errors
    ///
    /// When PostgreSQL cannot be reached.
    pub async fn watch_routes(&self) -> Result<RouteWatch, StoreError> {
        let inner = match self {
            AnyStore::Postgres(s) => WatchInner::Postgres {
                pool: s.pool().clone(),
                listener: Some(pg_listener(s.pool()).await.map_err(StoreError::Database)?),
            },
            AnyStore::Sqlite(s) => WatchInner::Sqlite(s.subscribe()),
        };
        Ok(RouteWatch { inner })
    }
}

impl RouteWatch {
    /// The next change. After a lost connection it reconnects (retrying every second while
    /// the database is down) and then answers [`RouteEvent::Resync`].
    pub async fn next(&mut self) -> RouteEvent {
        match &mut self.inner {
            WatchInner::Sqlite(rx) => match rx.recv().await {
                Ok(event) => event,
                // Fell behind: some changes were dropped.
                Err(broadcast::error::RecvError::Lagged(_)) => RouteEvent::Resync,
                // The store is gone: nothing will change any more.
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            },
            WatchInner::Postgres { pool, listener } => loop {
                if let Some(l) = listener {
                    match l.try_recv().await {
                        Ok(Some(n)) => return RouteEvent::parse(n.payload()),
                        // The connection was lost and has been re-established.
                        Ok(None) => return RouteEvent::Resync,
                        Err(e) => {
                            tracing::warn!(error = %e, "route listener lost its connection");
                            *listener = None;
                        }
                    }
                }
                match pg_listener(pool).await {
                    Ok(l) => {
                        *listener = Some(l);
                        return RouteEvent::Resync;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "route listener cannot reconnect; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            },
        }
    }
}

/// Told of each route change the API commits, before the API answers: the all-in-one server's
/// routing table applies it at once, so a deploy is live by the time its answer arrives (other
/// nodes hear of it through the store's announcements).
pub trait RouteSink: Send + Sync + 'static {
    fn changed(
        &self,
        event: RouteEvent,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}
