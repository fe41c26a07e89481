//! The management API under `/api/v1` (DESIGN.md §4): JSON over HTTP with bearer tokens.
//!
//! Every route is registered through `utoipa-axum`, so the OpenAPI document served at
//! `/api/v1/openapi.json` is built from the same handlers that answer: it cannot drift.
//!
//! Tenancy is in the path (`/api/v1/tenants/{tenant}/…`). A tenant's token reaches only its own
//! tenant; anything else answers 404 exactly as if it did not exist, so a token cannot probe
//! which other tenants or functions there are. An admin token reaches every tenant.

mod format;
mod functions;
mod invocations;
mod kv;
mod schedules;
mod tenants;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use picloud_edge::{
    ApiError, BodyTimedOut, ErrorBody, ErrorDetail, InFlight, InFlightGuard, Json, MetricsSource,
    Path, Principal, Slot, authenticate, declared_length, drain_refused_body, is_body_timeout,
};
pub use picloud_store::limits::executor_limits;
pub use picloud_store::routes::RouteSink;

use crate::store::records::Recorder;
use crate::store::routes::RouteEvent;
use crate::store::{AnyStore, Function, Tenant};
use picloud_edge::tokens::Tokens;

pub use picloud_executor_protocol::{Invocation, InvokeFuture, Invoker};

/// Sizes the API accepts.
#[derive(Debug, Clone, Copy)]
pub struct ApiConfig {
    /// Largest script source, in bytes; larger is answered 413. Default 256 KiB.
    pub max_script_bytes: usize,
    /// Largest request body, in bytes; larger is answered 413. Default 1 MiB.
    pub max_body_bytes: usize,
    /// What each tenant's versions may hold (see [`crate::store::VersionQuota`]).
    pub versions: crate::store::VersionQuota,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_script_bytes: 256 << 10,
            max_body_bytes: 1 << 20,
            versions: crate::store::VersionQuota::default(),
        }
    }
}

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: AnyStore,
    pub invoker: Arc<dyn Invoker>,
    pub in_flight: Arc<InFlight>,
    pub config: ApiConfig,
    /// The local routing table, if this process serves endpoints.
    pub routes: Option<Arc<dyn RouteSink>>,
    /// The metrics of the endpoints this process serves, if any.
    pub metrics: Option<Arc<dyn MetricsSource>>,
    /// Where invocation records go (test-invokes here), and their live tail.
    pub recorder: Option<Arc<Recorder>>,
    /// Every unrevoked token, for the token checks.
    pub tokens: Arc<Tokens>,
    /// Where tenants' own hosts are (`{tenant}.{this}`), to tell clients; `None` where this
    /// server does not know (its functions answer only on the path form).
    pub functions_domain: Option<String>,
}

impl ApiState {
    async fn route_changed(&self, event: RouteEvent) {
        if let Some(routes) = &self.routes {
            routes.changed(event).await;
        }
    }

    /// Applies a token's change to this process's cache before the API answers; a failure is
    /// left to the cache's watcher, which retries.
    async fn token_changed(&self, id: i64) {
        if let Err(e) = self.tokens.apply(&self.store, RouteEvent::Token(id)).await {
            tracing::warn!(error = %e, "cannot apply a token change now; the watcher will");
        }
    }
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A query parameter's value, or its default, refused (400, naming the parameter and its range)
/// when outside `range`: a value clamped without a word (`limit=0` answering one record) hides
/// the caller's mistake.
pub(crate) fn within<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ApiError> {
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::BadRequest(format!(
            "`{name}` is {v}; it must be from {} to {}",
            range.start(),
            range.end()
        )))
    }
}

impl FromRequestParts<ApiState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        authenticate(&state.tokens, &parts.headers)
    }
}

/// The tenant named in the path, if the caller may reach it; otherwise 404, as if it did not
/// exist.
async fn reachable_tenant(
    state: &ApiState,
    principal: &Principal,
    name: &str,
) -> Result<Tenant, ApiError> {
    match state.store.tenant_by_name(name).await? {
        Some(t) if principal.can_reach(&t) => Ok(t),
        _ => Err(ApiError::NotFound("tenant")),
    }
}

/// The tenant and function named in the path, if the caller may reach them.
async fn reachable_function(
    state: &ApiState,
    principal: &Principal,
    tenant: &str,
    function: &str,
) -> Result<(Tenant, Function), ApiError> {
    let tenant = reachable_tenant(state, principal, tenant).await?;
    let function = state
        .store
        .function(tenant.id, function)
        .await?
        .ok_or(ApiError::NotFound("function"))?;
    Ok((tenant, function))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "PiCloud management API",
        description = "Tenants, tokens, functions, versions, deploys, environment, test invocations, \
                       invocation records, schedules, and the Rhai formatter. \
                       Every route but this document needs `Authorization: Bearer <token>`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ErrorDetail))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes and the OpenAPI document built from them.
fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tenants::whoami))
        .routes(routes!(tenants::list_tenants, tenants::create_tenant))
        .routes(routes!(
            tenants::get_tenant,
            tenants::update_tenant,
            tenants::delete_tenant
        ))
        .routes(routes!(kv::list_keys))
        .routes(routes!(kv::get_entry, kv::delete_entry))
        .routes(routes!(tenants::set_ceilings))
        .routes(routes!(tenants::list_tokens, tenants::create_token))
        .routes(routes!(tenants::revoke_token))
        .routes(routes!(
            tenants::list_admin_tokens,
            tenants::create_admin_token
        ))
        .routes(routes!(tenants::revoke_admin_token))
        .routes(routes!(
            functions::list_functions,
            functions::create_function
        ))
        .routes(routes!(
            functions::get_function,
            functions::update_function,
            functions::delete_function
        ))
        .routes(routes!(functions::list_versions, functions::create_version))
        .routes(routes!(functions::get_version, functions::update_version))
        .routes(routes!(functions::prune_versions))
        .routes(routes!(functions::deploy))
        .routes(routes!(functions::rollback))
        .routes(routes!(functions::list_env))
        .routes(routes!(functions::set_env, functions::unset_env))
        .routes(routes!(functions::test_invoke))
        .routes(routes!(tenants::metrics))
        .routes(routes!(invocations::list_invocations))
        .routes(routes!(invocations::tail_invocations))
        .routes(routes!(invocations::function_stats))
        .routes(routes!(
            schedules::list_schedules,
            schedules::create_schedule
        ))
        .routes(routes!(
            schedules::get_schedule,
            schedules::update_schedule,
            schedules::delete_schedule
        ))
        .routes(routes!(schedules::list_runs))
        .routes(routes!(format::format))
}

/// The routes and their document, completed by [`document_common_errors`].
fn split() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = routes().split_for_parts();
    document_common_errors(&mut doc);
    (router, doc)
}

/// An error answer with the [`ErrorBody`] schema.
fn error_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Adds to every operation the errors that its extractors, not its handler, answer with.
///
/// Every route takes a [`Principal`] (401 without a valid token; 503 when the database that
/// resolves tokens does not answer); every route with a body takes it through [`Json`] (400
/// malformed, 413 past the cap, 415 not `application/json`, 422 wrong types or unknown fields);
/// every route with path parameters takes them through [`Path`] (400 when one does not parse,
/// a version that is not a number, say); every write may meet a full disk (507). Declared here once, from what the document already
/// says of each operation, rather than in each `#[utoipa::path]`, where a new route would
/// forget them: schemathesis (`tests/schemathesis.rs`) holds every answer to the document. A
/// status a handler documents itself keeps its own description.
fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{Operation, ParameterIn};

    fn add(op: &mut Operation, status: &str, description: &str) {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description));
    }

    for item in doc.paths.paths.values_mut() {
        let item_has_path_params = item
            .parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == ParameterIn::Path);
        // Writes may also meet a full disk under the database.
        for op in [
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add(
                op,
                "507",
                "The database's disk is full: nothing was saved; retry once space is freed.",
            );
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            add(
                op,
                "401",
                "No token, a malformed `Authorization` header, or an unknown or revoked token.",
            );
            add(op, "503", "The database does not answer; retry.");
            let has_path_params = item_has_path_params
                || op
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.parameter_in == ParameterIn::Path);
            if op.request_body.is_some() {
                add(
                    op,
                    "400",
                    "The body is not JSON, or a path or query parameter does not parse.",
                );
                add(op, "413", "The body is larger than the server accepts.");
                add(
                    op,
                    "415",
                    "A body without `Content-Type: application/json`.",
                );
                add(
                    op,
                    "422",
                    "A field of the wrong type, a missing or unknown field, or a value out of \
                     bounds.",
                );
            } else if has_path_params {
                add(op, "400", "A path parameter does not parse.");
            }
        }
    }
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    split().1
}

/// The `/api/v1` router, its state applied; JSON errors for unknown routes and methods too.
pub fn router(state: ApiState) -> Router {
    let (router, doc) = split();
    let doc = Arc::new(doc.to_pretty_json().unwrap_or_else(|_| "{}".to_string()));
    let max_body = state.config.max_body_bytes;
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = Arc::clone(&doc);
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc.as_str().to_owned(),
                    )
                }
            }),
        )
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not take that method").into_response()
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                // A declared length past the cap is refused here, its body drained first (see
                // `drain_refused_body`); a body that only turns out too long is the
                // extractors' to refuse.
                let declared = declared_length(request.headers());
                match declared {
                    Some(n) if n > max_body as u64 => {
                        drain_refused_body(request.into_body()).await;
                        picloud_edge::api_body_too_large(declared).into_response()
                    }
                    _ => next.run(request).await,
                }
            },
        ))
        .with_state(state)
}
