//! `picloud serve`: the all-in-one server. It opens the store (embedded SQLite in the data
//! directory, or PostgreSQL), creates the admin token at first start, starts the executor, and
//! serves the management API (`/api/v1`), the function endpoints (`/fn/…`) and health checks
//! from one process tree.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use clap::Args;
use picloud_executor_core::{Executor, ExecutorConfig, Isolation};
use picloud_manager_core::api::{
    ApiConfig, ApiError, ApiState, InvokeFuture, Invoker, authenticate, executor_limits,
};
use picloud_manager_core::{AnyStore, FunctionLimits, PgStore, SqliteStore, Store};
use picloud_shared::{FunctionRef, InvocationRequest, Limits};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PICLOUD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the embedded database and the module cache live.
    #[arg(long, env = "PICLOUD_DATA_DIR", default_value = "./picloud-data")]
    pub data_dir: PathBuf,
    /// Where the compiled guest is cached. Default: `cache` in the data directory.
    #[arg(long, env = "PICLOUD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
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
    /// Largest script a version may hold, in bytes (larger: 413).
    #[arg(long, env = "PICLOUD_MAX_SCRIPT_BYTES", default_value_t = ApiConfig::default().max_script_bytes)]
    pub max_script_bytes: usize,
    /// Largest request body the API and the function endpoints accept, in bytes (larger: 413).
    #[arg(long, env = "PICLOUD_MAX_BODY_BYTES", default_value_t = ApiConfig::default().max_body_bytes)]
    pub max_body_bytes: usize,
}

/// The executor as the API's [`Invoker`].
struct ExecutorInvoker(Arc<Executor>);

impl Invoker for ExecutorInvoker {
    fn invoke<'a>(
        &'a self,
        owner: &'a FunctionRef,
        script: &'a str,
        request: &'a InvocationRequest,
        limits: &'a Limits,
    ) -> InvokeFuture<'a> {
        Box::pin(self.0.invoke_for(owner, script, request, limits))
    }
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
    let mut config = ExecutorConfig::new(
        args.isolation,
        args.cache_dir
            .clone()
            .unwrap_or_else(|| args.data_dir.join("cache")),
    );
    // The executor must allow what the highest ceiling lets a function choose.
    config.max_memory_bytes = config
        .max_memory_bytes
        .max(FunctionLimits::CEILING.memory_bytes);
    let executor = Arc::new(
        Executor::start(config)
            .await
            .context("starting the executor")?,
    );
    let state = ApiState {
        store,
        invoker: Arc::new(ExecutorInvoker(executor)),
        in_flight: Arc::default(),
        config: ApiConfig {
            max_script_bytes: args.max_script_bytes,
            max_body_bytes: args.max_body_bytes,
        },
    };
    let app = app(state);
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

/// The whole HTTP surface: API, function endpoints, health checks; JSON 404 for the rest.
fn app(state: ApiState) -> Router {
    let endpoints = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/fn/{tenant}/{function}", any(invoke))
        .route("/fn/{tenant}/{function}/", any(invoke))
        .route("/fn/{tenant}/{function}/{*rest}", any(invoke))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state.clone());
    picloud_manager_core::api::router(state)
        .merge(endpoints)
        .fallback(|| async { ApiError::NotFound("route").into_response() })
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

async fn ready(State(state): State<ApiState>) -> Response {
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

/// What an endpoint runs: the function's active source and its limits.
struct Target {
    function_id: i64,
    script: String,
    limits: FunctionLimits,
}

/// Finds the active version of `tenant/function`, checking the caller's token when the
/// function is not public. A function the caller may not see is "not found".
async fn target(
    state: &ApiState,
    tenant: &str,
    function: &str,
    headers: &HeaderMap,
) -> Result<Target, ApiError> {
    let not_found = ApiError::NotFound("function");
    let t = state
        .store
        .tenant_by_name(tenant)
        .await?
        .ok_or(ApiError::NotFound("function"))?;
    let f = state
        .store
        .function(t.id, function)
        .await?
        .ok_or(ApiError::NotFound("function"))?;
    if !f.public {
        let principal = authenticate(&state.store, headers).await?;
        if !principal.can_reach(&t) {
            return Err(not_found);
        }
    }
    let version = f.active_version.ok_or(ApiError::NotFound("function"))?;
    let script = state
        .store
        .version_source(f.id, version)
        .await?
        .ok_or(not_found)?;
    Ok(Target {
        function_id: f.id,
        script,
        limits: FunctionLimits::resolve(&f.limits, &t.ceilings),
    })
}

/// `/fn/{tenant}/{function}/{*rest}`: runs the function's active version.
async fn invoke(
    State(state): State<ApiState>,
    Path(params): Path<BTreeMap<String, String>>,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (Some(tenant), Some(function)) = (params.get("tenant"), params.get("function")) else {
        return ApiError::NotFound("function").into_response();
    };
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::TooLarge(format!(
                "the request body is larger than {} bytes",
                state.config.max_body_bytes
            ))
            .into_response();
        }
        Err(e) => return ApiError::BadRequest(e.body_text()).into_response(),
    };
    let target = match target(&state, tenant, function, &headers).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let Some(_place) = state
        .in_flight
        .try_acquire(target.function_id, target.limits.concurrency)
    else {
        return ApiError::TooManyRequests(format!(
            "{} invocations of this function are running, its concurrency limit",
            target.limits.concurrency
        ))
        .into_response();
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
        .invoker
        .invoke(
            &owner,
            &target.script,
            &request,
            &executor_limits(&target.limits),
        )
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
