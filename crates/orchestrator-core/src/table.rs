//! The routing table: every routable function, by tenant and name.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use picloud_manager_core::api::RouteSink;

use crate::metrics::Metrics;
use picloud_manager_core::{AnyStore, Route, RouteEvent, Store, StoreError};

/// Routes by tenant name, then function name (looked up by `&str`, without allocating).
#[derive(Debug, Default)]
struct Tables {
    by_name: HashMap<String, HashMap<String, Arc<Route>>>,
}

impl Tables {
    fn insert(&mut self, route: Route) {
        self.by_name
            .entry(route.tenant.clone())
            .or_default()
            .insert(route.function.clone(), Arc::new(route));
    }

    fn remove_where(&mut self, keep: impl Fn(&Route) -> bool) {
        for functions in self.by_name.values_mut() {
            functions.retain(|_, r| keep(r));
        }
        self.by_name.retain(|_, f| !f.is_empty());
    }
}

impl Tables {
    fn keys(&self) -> HashSet<(String, String)> {
        self.by_name
            .iter()
            .flat_map(|(t, fs)| fs.keys().map(move |f| (t.clone(), f.clone())))
            .collect()
    }
}

/// What the endpoints run, held in memory.
#[derive(Debug, Default)]
pub struct RoutingTable {
    tables: RwLock<Tables>,
    metrics: Arc<Metrics>,
    /// Held by each update from its read of the store to its write of the table. The watcher
    /// and the API both update: without it, a watcher that read just before a change committed
    /// could write that stale read after the API had applied the change, undoing it.
    updating: tokio::sync::Mutex<()>,
}

impl RoutingTable {
    /// An empty table whose functions get series in `metrics` while they are routable.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            tables: RwLock::default(),
            updating: tokio::sync::Mutex::default(),
            metrics,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Changes the tables, then creates the series of functions that became routable and
    /// removes those of functions that stopped being.
    fn change(&self, f: impl FnOnce(&mut Tables)) {
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        let before = tables.keys();
        f(&mut tables);
        let after = tables.keys();
        drop(tables);
        for (t, f) in after.difference(&before) {
            self.metrics.add_function(t, f);
        }
        for (t, f) in before.difference(&after) {
            self.metrics.remove_function(t, f);
        }
    }

    /// The route of `tenant/function`, if it has an active version.
    pub fn get(&self, tenant: &str, function: &str) -> Option<Arc<Route>> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        tables.by_name.get(tenant)?.get(function).cloned()
    }

    /// How many functions are routable.
    pub fn len(&self) -> usize {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        tables.by_name.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces everything with what the store holds.
    ///
    /// # Errors
    ///
    /// When the store fails; the table is then unchanged.
    pub async fn reload(&self, store: &AnyStore) -> Result<(), StoreError> {
        let _updating = self.updating.lock().await;
        self.reload_locked(store).await
    }

    async fn reload_locked(&self, store: &AnyStore) -> Result<(), StoreError> {
        let routes = store.routes().await?;
        let mut fresh = Tables::default();
        for route in routes {
            fresh.insert(route);
        }
        self.change(|tables| *tables = fresh);
        Ok(())
    }

    /// Brings the table up to date with one change.
    ///
    /// # Errors
    ///
    /// When the store fails; the table is then unchanged.
    pub async fn apply(&self, store: &AnyStore, event: RouteEvent) -> Result<(), StoreError> {
        let _updating = self.updating.lock().await;
        match event {
            RouteEvent::Resync => self.reload_locked(store).await,
            RouteEvent::Function(id) => {
                let route = store.function_route(id).await?;
                self.change(|tables| {
                    // Renamed or deleted functions leave no stale name behind.
                    tables.remove_where(|r| r.function_id != id);
                    if let Some(route) = route {
                        tables.insert(route);
                    }
                });
                Ok(())
            }
            RouteEvent::Tenant(id) => {
                let routes = store.tenant_routes(id).await?;
                self.change(|tables| {
                    tables.remove_where(|r| r.tenant_id != id);
                    for route in routes {
                        tables.insert(route);
                    }
                });
                Ok(())
            }
            // Schedules are the manager's, tokens the token cache's; they change no route.
            RouteEvent::Schedule(_) | RouteEvent::Token(_) => Ok(()),
        }
    }
}

/// Loads the routing table and keeps it current for as long as the runtime runs: subscribes
/// to changes first (so none falls between the load and the subscription), loads everything,
/// then applies each change. A change that cannot be applied (the database is away) is retried
/// as a full reload every second until it succeeds.
///
/// # Errors
///
/// When the first load fails.
pub async fn start_routing(
    store: AnyStore,
    metrics: Arc<Metrics>,
) -> Result<Arc<RoutingTable>, StoreError> {
    let mut watch = store.watch_routes().await?;
    let table = Arc::new(RoutingTable::new(metrics));
    table.reload(&store).await?;
    let kept = Arc::clone(&table);
    tokio::spawn(async move {
        loop {
            let mut event = watch.next().await;
            while let Err(e) = kept.apply(&store, event).await {
                tracing::warn!(error = %e, "cannot update the routing table; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                event = RouteEvent::Resync;
            }
        }
    });
    Ok(table)
}

/// The routing table of this process as the API's [`RouteSink`]: a change the API commits is
/// applied before the API answers. A failure is left to the watcher, which retries.
#[derive(Debug)]
pub struct LocalRoutes {
    pub table: Arc<RoutingTable>,
    pub store: AnyStore,
}

impl RouteSink for LocalRoutes {
    fn changed(&self, event: RouteEvent) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if let Err(e) = self.table.apply(&self.store, event).await {
                tracing::warn!(error = %e, "cannot apply a route change now; the watcher will");
            }
        })
    }
}
