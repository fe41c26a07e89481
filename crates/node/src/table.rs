//! The routing table: every routable function, by tenant and name.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use picloud_store::routes::RouteSink;

use crate::metrics::Metrics;
use picloud_store::{AnyStore, Route, RouteEvent, StoreError};

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use picloud_store::{LimitOverrides, SqliteStore};

    use super::*;

    /// A fresh SQLite store (the embedded default: a real database, not a stand-in).
    async fn store() -> AnyStore {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join("picloud-table-tests");
        std::fs::create_dir_all(&dir).expect("temp dir");
        // Databases of test processes that are gone are removed: nothing piles up.
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().unwrap_or_default();
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let path = dir.join(format!(
            "{}-{}.db",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        AnyStore::Sqlite(SqliteStore::open(&path).await.expect("open and migrate"))
    }

    /// A function of `tenant` with `source` saved and deployed; its id.
    async fn deployed(store: &AnyStore, tenant: i64, name: &str, source: &str) -> i64 {
        let f = store
            .create_function(tenant, name, true)
            .await
            .expect("function");
        let v = store
            .add_version(f.id, source, "test")
            .await
            .expect("version");
        store.deploy(f.id, v.version).await.expect("deploy");
        f.id
    }

    fn has_series(table: &RoutingTable, tenant: &str, function: &str) -> bool {
        table
            .metrics()
            .render(crate::metrics::PoolFigures::default(), None)
            .contains(&format!(
                r#"function="{function}",outcome="ok",tenant="{tenant}""#
            ))
    }

    #[tokio::test]
    async fn each_change_reaches_the_table_and_its_metrics() {
        let store = store().await;
        let acme = store.create_tenant("acme").await.expect("tenant").id;
        let other = store.create_tenant("other").await.expect("tenant").id;
        let hello = deployed(&store, acme, "hello", "fn handle(req) { 1 }").await;
        // Saved but never deployed: not routable.
        let draft = store
            .create_function(acme, "draft", true)
            .await
            .expect("function");
        store
            .add_version(draft.id, "fn handle(req) { 2 }", "test")
            .await
            .expect("version");
        deployed(&store, other, "theirs", "fn handle(req) { 3 }").await;

        let table = RoutingTable::new(Arc::default());
        table.reload(&store).await.expect("load");
        assert_eq!(table.len(), 2);
        assert!(table.get("acme", "draft").is_none(), "nothing deployed");
        assert!(has_series(&table, "acme", "hello"));
        assert!(!has_series(&table, "acme", "draft"));

        // A new version deployed and a limit changed: the one function's event brings both.
        let v2 = store
            .add_version(hello, "fn handle(req) { 10 }", "test")
            .await
            .expect("version");
        store.deploy(hello, v2.version).await.expect("deploy");
        let limits = LimitOverrides {
            concurrency: Some(3),
            ..LimitOverrides::default()
        };
        store
            .update_function(hello, false, &limits)
            .await
            .expect("update");
        table
            .apply(&store, RouteEvent::Function(hello))
            .await
            .expect("apply");
        let route = table.get("acme", "hello").expect("still routable");
        assert_eq!(
            (route.version, route.public, route.limits.concurrency),
            (v2.version, false, 3)
        );

        // Deleted: gone from the table and from the metrics, the neighbours untouched.
        store.delete_function(acme, "hello").await.expect("delete");
        table
            .apply(&store, RouteEvent::Function(hello))
            .await
            .expect("apply");
        assert!(table.get("acme", "hello").is_none());
        assert!(!has_series(&table, "acme", "hello"));
        assert!(table.get("other", "theirs").is_some());

        // A tenant's event reloads its functions only; a deleted tenant leaves nothing.
        let draft_v = store.versions(draft.id).await.expect("versions")[0].version;
        store.deploy(draft.id, draft_v).await.expect("deploy");
        table
            .apply(&store, RouteEvent::Tenant(acme))
            .await
            .expect("apply");
        assert!(table.get("acme", "draft").is_some());
        store.delete_tenant(other).await.expect("delete tenant");
        table
            .apply(&store, RouteEvent::Tenant(other))
            .await
            .expect("apply");
        assert!(table.get("other", "theirs").is_none());
        assert!(!has_series(&table, "other", "theirs"));
        assert_eq!(table.len(), 1);

        // Schedules and tokens change no route; a resync reads everything again.
        table
            .apply(&store, RouteEvent::Schedule(1))
            .await
            .expect("apply");
        table
            .apply(&store, RouteEvent::Resync)
            .await
            .expect("apply");
        assert_eq!(table.len(), 1);
        assert!(table.get("acme", "draft").is_some());
    }
}
