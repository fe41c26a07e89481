//! `picloud serve`: the all-in-one server. This first part opens the store (embedded SQLite in
//! the data directory, or PostgreSQL), creates the admin token at first start, starts the
//! executor and serves the function endpoints and health checks; the management API follows.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use clap::Args;
use picloud_executor_core::{Executor, ExecutorConfig, Isolation};
use picloud_manager_core::{AnyStore, PgStore, SqliteStore, Store};
use picloud_shared::{FunctionRef, InvocationRequest, Limits};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PICLOUD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the embedded database and the module cache live.
    #[arg(long, env = "PICLOUD_DATA_DIR", default_value = "./picloud-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL; without it PiCloud uses an SQLite file in the data directory.
    #[arg(long, env = "PICLOUD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Token chosen for the admin at first start (for automation); otherwise one is generated
    /// and printed once.
    #[arg(long, env = "PICLOUD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// `process` (a sandboxed process per invocation) or `instance` (in-process).
    #[arg(long, env = "PICLOUD_ISOLATION", default_value = "process")]
    pub isolation: Isolation,
    /// How long in-flight requests may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "PICLOUD_GRACE_SECONDS", default_value_t = 10)]
    pub grace_seconds: u64,
}

#[derive(Clone)]
struct AppState {
    store: AnyStore,
    executor: Arc<Executor>,
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            args.data_dir.display()
        )
    })?;
    let store = match &args.database_url {
        Some(url) => AnyStore::Postgres(PgStore::connect(url).await.context("opening PostgreSQL")?),
        None => {
            let path = args.data_dir.join("picloud.db");
            AnyStore::Sqlite(
                SqliteStore::open(&path)
                    .await
                    .with_context(|| format!("opening {}", path.display()))?,
            )
        }
    };
    if let Some(token) =
        picloud_manager_core::auth::bootstrap_admin(&store, args.admin_token.as_deref()).await?
    {
        println!(
            "Created the admin token (shown once, only its hash is stored):\n\n    {token}\n\n\
             Use it as `Authorization: Bearer <token>` or `export PICLOUD_TOKEN=<token>` for the CLI."
        );
    }
    let executor = Executor::start(ExecutorConfig::new(
        args.isolation,
        args.data_dir.join("cache"),
    ))
    .await
    .context("starting the executor")?;
    let state = AppState {
        store,
        executor: Arc::new(executor),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/fn/{tenant}/{function}", any(invoke))
        .route("/fn/{tenant}/{function}/", any(invoke))
        .route("/fn/{tenant}/{function}/{*rest}", any(invoke))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("PiCloud listening on http://{}", listener.local_addr()?);
    let grace = Duration::from_secs(args.grace_seconds);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    // After the signal, in-flight requests get `grace` to finish; then the process exits.
    let mut stop_rx = stop_rx;
    tokio::select! {
        served = server => served.context("serving")?,
        () = async {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("the grace period ended with requests still running"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.store.list_tenants().await {
        Ok(_) => "ready".into_response(),
        Err(e) => {
            tracing::error!(error = %e, "readiness: the store does not answer");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the database does not answer",
            )
        }
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "kind": kind, "message": message } });
    (status, axum::Json(body)).into_response()
}

/// `/fn/{tenant}/{function}/{*rest}`: runs the function's active version.
async fn invoke(
    State(state): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (Some(tenant), Some(function)) = (params.get("tenant"), params.get("function")) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such function");
    };
    let not_found = || error(StatusCode::NOT_FOUND, "not_found", "no such function");
    let source = async {
        let Some(t) = state.store.tenant_by_name(tenant).await? else {
            return Ok(None);
        };
        let Some(f) = state.store.function(t.id, function).await? else {
            return Ok(None);
        };
        let Some(version) = f.active_version else {
            return Ok(None);
        };
        state.store.version_source(f.id, version).await
    };
    let script = match source.await {
        Ok(Some(s)) => s,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!(error = %e, "looking up a function");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            );
        }
    };
    let request = InvocationRequest {
        method: method.to_string(),
        path: format!("/{}", params.get("rest").map_or("", String::as_str)),
        query,
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let owner = FunctionRef::new(tenant.clone(), function.clone());
    let result = state
        .executor
        .invoke_for(&owner, &script, &request, &Limits::default())
        .await;
    match result.response {
        Some(r) => {
            let mut response = (
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
                r.body,
            )
                .into_response();
            for (k, v) in r.headers {
                if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                    response.headers_mut().insert(k, v);
                }
            }
            response
        }
        None => {
            let status = StatusCode::from_u16(result.outcome.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // Internal failures are logged, not shown to the client.
            let message = match &result.outcome {
                picloud_shared::Outcome::Internal { message } => {
                    tracing::error!(%tenant, %function, %message, "invocation failed internally");
                    "internal error".to_string()
                }
                other => other.describe(),
            };
            error(status, result.outcome.kind(), &message)
        }
    }
}
