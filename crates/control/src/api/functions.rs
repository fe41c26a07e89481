//! Functions, their versions, deploy and rollback, environment variables, and test-invokes.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use picloud_shared::{FunctionRef, InvocationRequest, InvocationResult};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::tenants::TenantPath;
use super::{
    ApiError, ApiState, ErrorBody, Invocation, Json, Path, Principal, Slot, executor_limits,
    reachable_function, reachable_tenant,
};
use crate::script::{check_script, check_text};
use crate::store::limits::{FunctionLimits, LimitOverrides};
use crate::store::records::{InvocationRecord, InvocationRecordTemplate, Trigger, Unanswered};
use crate::store::routes::RouteEvent;
use crate::store::validate_name;
use crate::store::{EnvVar, Function, Tenant, Version};

/// Most functions one tenant may have (a soft cap: concurrent creates may pass it by a few).
pub const MAX_FUNCTIONS: usize = 1_000;
/// Most variables one function may have.
pub const MAX_ENV_VARS: usize = 100;
/// Longest value of one variable, in bytes.
pub const MAX_ENV_VALUE_BYTES: usize = 32 << 10;

/// A function with the limits in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct FunctionView {
    pub name: String,
    /// Public functions answer anyone; others need a token of their tenant.
    pub public: bool,
    /// The version its endpoint runs; `null` until one is deployed.
    pub active_version: Option<i32>,
    pub created_at: i64,
    /// Where it answers, relative to the server (sandboxed: for API clients).
    pub endpoint: String,
    /// The host of its tenant's own origin, where it answers at `/{function}`: what a browser
    /// should load. `null` when the server has no functions domain.
    pub host: Option<String>,
    /// The limits it runs under: its choices over the defaults, capped by its tenant's
    /// ceilings.
    pub limits: FunctionLimits,
    /// The limits it chose (`null`: the default).
    pub chosen_limits: LimitOverrides,
    /// Whether its script sees the caller's `Authorization` header (never a PiCloud token:
    /// that is removed whatever this says).
    pub forward_authorization: bool,
}

fn view(state: &ApiState, tenant: &Tenant, f: Function) -> FunctionView {
    FunctionView {
        endpoint: format!("/fn/{}/{}", tenant.name, f.name),
        host: state
            .functions_domain
            .as_ref()
            .map(|domain| format!("{}.{domain}", tenant.name)),
        limits: FunctionLimits::resolve(&f.limits, &tenant.ceilings),
        name: f.name,
        public: f.public,
        active_version: f.active_version,
        created_at: f.created_at,
        chosen_limits: f.limits,
        forward_authorization: f.forward_authorization,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FunctionPath {
    pub tenant: String,
    /// The function's name.
    pub function: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VersionPath {
    pub tenant: String,
    pub function: String,
    /// The version number (1, 2, …).
    pub version: i32,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EnvPath {
    pub tenant: String,
    pub function: String,
    /// `[A-Za-z_][A-Za-z0-9_]{0,127}`
    pub name: String,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFunction {
    /// `[a-z0-9][a-z0-9-]{0,62}`
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")]
    pub name: String,
    /// Default `true`.
    #[serde(default = "default_true")]
    pub public: bool,
    /// A first version to save (checked as any version is; a leading byte order mark is
    /// dropped).
    #[serde(default, deserialize_with = "crate::script::optional_without_bom")]
    pub source: Option<String>,
    /// Deploy that first version at once. Default `false`.
    #[serde(default)]
    pub deploy: bool,
    /// Limits to choose; left out: the defaults.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Let the script see its caller's `Authorization` header (a PiCloud token never reaches
    /// it). Default `false`: the header is removed before the script sees the request.
    #[serde(default)]
    pub forward_authorization: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFunction {
    /// Left out: unchanged.
    pub public: Option<bool>,
    /// Replaces every chosen limit (a left-out field goes back to its default); left out:
    /// unchanged.
    pub limits: Option<LimitOverrides>,
    /// Whether the script sees its caller's `Authorization` header (never a PiCloud token);
    /// left out: unchanged.
    pub forward_authorization: Option<bool>,
}

/// A saved version; its source is fetched on its own.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub version: i32,
    pub sha256: String,
    /// The name of the token that saved it.
    pub author: String,
    pub created_at: i64,
    /// Whether the function's endpoint runs this version.
    pub active: bool,
    /// Pinned versions are never pruned, automatically or on request.
    pub pinned: bool,
    /// A deploying save of the active version's very source: nothing was saved, this is the
    /// active version (answered 200, not 201).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
}

fn version_view(v: Version, active: Option<i32>) -> VersionView {
    VersionView {
        reused: false,
        active: active == Some(v.version),
        pinned: v.pinned,
        version: v.version,
        sha256: v.sha256,
        author: v.author,
        created_at: v.created_at,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionSource {
    #[serde(flatten)]
    pub version: VersionView,
    pub source: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVersion {
    /// The Rhai script; it must compile and define `fn handle(req)` (a leading byte order mark
    /// is dropped).
    #[serde(deserialize_with = "crate::script::without_bom")]
    pub source: String,
    /// Deploy it at once. Default `false`.
    #[serde(default)]
    pub deploy: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub version: i32,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The version to go back to; left out: the one before the active version.
    pub version: Option<i32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEnv {
    pub value: String,
    /// A secret's value is never shown again by the API. Default `false`.
    #[serde(default)]
    pub secret: bool,
}

/// The request a test-invoke sends; everything left out is that of a `GET /`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TestRequest {
    /// Default `GET`.
    pub method: Option<String>,
    /// Default `/`.
    pub path: Option<String>,
    pub query: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TestInvoke {
    /// A script to run instead of a saved version (not saved).
    #[serde(deserialize_with = "crate::script::optional_without_bom")]
    pub source: Option<String>,
    /// A saved version to run; with neither, the active version.
    pub version: Option<i32>,
    pub request: TestRequest,
    /// Run `on_schedule(event)` as this schedule of the function would, now ("Run now"):
    /// `scheduled_at` and `fired_at` are now, `backfill` false, the schedule's payload; the
    /// request is not used. Recorded as a test run of that schedule, not as one of its ticks.
    pub schedule: Option<i64>,
}

fn check_size(state: &ApiState, source: &str) -> Result<(), ApiError> {
    let max = state.config.max_script_bytes;
    if source.len() > max {
        return Err(ApiError::TooLarge(format!(
            "the script is {} bytes; the limit is {max}",
            source.len()
        )));
    }
    Ok(())
}

/// A script fit to save: within the size limit, compiling, defining `handle`.
async fn checked(state: &ApiState, source: &str) -> Result<(), ApiError> {
    check_size(state, source)?;
    let source = source.to_owned();
    // Parsing a large script is CPU work: off the async threads.
    tokio::task::spawn_blocking(move || check_script(&source))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "the script check panicked");
            ApiError::Internal
        })??;
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/functions", tag = "functions", params(TenantPath),
    responses((status = 200, body = Vec<FunctionView>), (status = 404, body = ErrorBody)))]
pub async fn list_functions(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<TenantPath>,
) -> Result<Json<Vec<FunctionView>>, ApiError> {
    let tenant = reachable_tenant(&state, &principal, &path.tenant).await?;
    let functions = state.store.list_functions(tenant.id).await?;
    Ok(Json(
        functions
            .into_iter()
            .map(|f| view(&state, &tenant, f))
            .collect(),
    ))
}

/// Creates a function, optionally with a first version (and deploys it when asked).
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/functions", tag = "functions", params(TenantPath),
    request_body = CreateFunction,
    responses((status = 201, body = FunctionView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_function(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<TenantPath>,
    Json(body): Json<CreateFunction>,
) -> Result<(StatusCode, Json<FunctionView>), ApiError> {
    let tenant = reachable_tenant(&state, &principal, &path.tenant).await?;
    validate_name(&body.name)?;
    body.limits.check_within(&tenant.ceilings)?;
    // Everything is checked before anything is written.
    if let Some(source) = &body.source {
        checked(&state, source).await?;
    }
    if state.store.list_functions(tenant.id).await?.len() >= MAX_FUNCTIONS {
        return Err(ApiError::Conflict(format!(
            "a tenant may have at most {MAX_FUNCTIONS} functions"
        )));
    }
    // One transaction: a failure half-way leaves no function without its version.
    let function = state
        .store
        .create_function_with(&crate::store::NewFunction {
            tenant_id: tenant.id,
            name: &body.name,
            public: body.public,
            limits: &body.limits,
            first_version: body
                .source
                .as_deref()
                .map(|source| (source, principal.token_name.as_str())),
            deploy: body.deploy,
            max_version_bytes: state.config.versions.max_tenant_bytes,
            forward_authorization: body.forward_authorization,
        })
        .await?;
    if body.deploy && body.source.is_some() {
        state.route_changed(RouteEvent::Function(function.id)).await;
    }
    Ok((StatusCode::CREATED, Json(view(&state, &tenant, function))))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/functions/{function}", tag = "functions",
    params(FunctionPath), responses((status = 200, body = FunctionView), (status = 404, body = ErrorBody)))]
pub async fn get_function(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
) -> Result<Json<FunctionView>, ApiError> {
    let (tenant, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    Ok(Json(view(&state, &tenant, function)))
}

/// Changes whether the function is public, its limits, and whether its script sees the
/// caller's `Authorization` header.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/functions/{function}", tag = "functions",
    params(FunctionPath), request_body = UpdateFunction,
    responses((status = 200, body = FunctionView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_function(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
    Json(body): Json<UpdateFunction>,
) -> Result<Json<FunctionView>, ApiError> {
    let (tenant, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    // Only new choices are checked: a ceiling lowered since the last choice binds at run
    // time (see `FunctionLimits::resolve`) and must not block an unrelated change.
    if let Some(limits) = &body.limits {
        limits.check_within(&tenant.ceilings)?;
    }
    let limits = body.limits.unwrap_or(function.limits);
    let mut function = state
        .store
        .update_function(function.id, body.public.unwrap_or(function.public), &limits)
        .await?;
    if let Some(forward) = body
        .forward_authorization
        .filter(|f| *f != function.forward_authorization)
    {
        function = state
            .store
            .set_forward_authorization(function.id, forward)
            .await?;
    }
    state.route_changed(RouteEvent::Function(function.id)).await;
    Ok(Json(view(&state, &tenant, function)))
}

/// Deletes the function with its versions and variables; its endpoint stops answering.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/functions/{function}", tag = "functions",
    params(FunctionPath), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_function(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
) -> Result<StatusCode, ApiError> {
    let (tenant, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    state
        .store
        .delete_function(tenant.id, &function.name)
        .await?;
    state.route_changed(RouteEvent::Function(function.id)).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/functions/{function}/versions", tag = "versions",
    params(FunctionPath), responses((status = 200, body = Vec<VersionView>), (status = 404, body = ErrorBody)))]
pub async fn list_versions(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
) -> Result<Json<Vec<VersionView>>, ApiError> {
    let (_, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    let versions = state.store.versions(function.id).await?;
    Ok(Json(
        versions
            .into_iter()
            .map(|v| version_view(v, function.active_version))
            .collect(),
    ))
}

/// Saves a new immutable version. A script that does not compile is refused with its line and
/// column (422), and nothing changes: the active version keeps serving.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/functions/{function}/versions", tag = "versions",
    params(FunctionPath), request_body = CreateVersion,
    responses((status = 201, body = VersionView),
              (status = 200, body = VersionView, description = "`deploy` of the active version's very source: nothing saved, the active version answered with `reused: true`"),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "`quota_exceeded`: the tenant's version storage or the function's version count is full even after pruning its versions that are neither live nor among the newest"),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_version(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
    Json(body): Json<CreateVersion>,
) -> Result<(StatusCode, Json<VersionView>), ApiError> {
    let (_, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    checked(&state, &body.source).await?;
    if body.deploy
        && let Some(active) = function.active_version
    {
        // The same source again (a pipeline deploying on every push): the live version is
        // kept, and nothing is saved that would only use up the version quota.
        let hash = crate::store::sha256_hex(&body.source);
        let live = state
            .store
            .versions(function.id)
            .await?
            .into_iter()
            .find(|v| v.version == active && v.sha256 == hash);
        if let Some(live) = live {
            let mut view = version_view(live, Some(active));
            view.reused = true;
            return Ok((StatusCode::OK, Json(view)));
        }
    }
    if body.deploy {
        // Refused before anything is saved.
        super::schedules::keeps_schedules_running(
            &state,
            &function,
            "the new version",
            None,
            Some(&body.source),
        )
        .await?;
    }
    // Within the tenant's quota, old versions pruned to make room (see `VersionQuota`).
    let saved = state
        .store
        .add_version_within(
            function.tenant_id,
            function.id,
            &body.source,
            &principal.token_name,
            &state.config.versions,
        )
        .await?;
    if !saved.pruned.is_empty() {
        tracing::info!(function = function.id, pruned = ?saved.pruned, "old versions pruned");
    }
    let version = saved.version;
    let mut active = function.active_version;
    if body.deploy {
        active = state
            .store
            .deploy(function.id, version.version)
            .await?
            .active_version;
        state.route_changed(RouteEvent::Function(function.id)).await;
    }
    Ok((StatusCode::CREATED, Json(version_view(version, active))))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/functions/{function}/versions/{version}",
    tag = "versions", params(VersionPath),
    responses((status = 200, body = VersionSource), (status = 404, body = ErrorBody)))]
pub async fn get_version(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<VersionPath>,
) -> Result<Json<VersionSource>, ApiError> {
    let (_, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    let version = state
        .store
        .versions(function.id)
        .await?
        .into_iter()
        .find(|v| v.version == path.version)
        .ok_or(ApiError::NotFound("version"))?;
    let source = state
        .store
        .version_source(function.id, path.version)
        .await?
        .ok_or(ApiError::NotFound("version"))?;
    Ok(Json(VersionSource {
        version: version_view(version, function.active_version),
        source,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVersion {
    /// Keep this version through every pruning (`true`), or let it go again (`false`).
    pub pinned: bool,
}

/// Pins or unpins a version.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/functions/{function}/versions/{version}",
    tag = "versions", params(VersionPath), request_body = UpdateVersion,
    responses((status = 200, body = VersionView), (status = 404, body = ErrorBody)))]
pub async fn update_version(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<VersionPath>,
    Json(body): Json<UpdateVersion>,
) -> Result<Json<VersionView>, ApiError> {
    let (_, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    let version = state
        .store
        .set_version_pinned(function.id, path.version, body.pinned)
        .await?;
    Ok(Json(version_view(version, function.active_version)))
}

/// How many of the newest versions a prune keeps when not told (what a save at the version cap
/// keeps too).
pub const PRUNE_KEEP_DEFAULT: u32 = 10;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneVersions {
    /// How many of the newest versions to keep besides the live and pinned ones, from 0 to
    /// 1,000. Default 10.
    pub keep: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PrunedVersions {
    /// The versions deleted, oldest first.
    pub pruned: Vec<i32>,
    /// The versions left.
    pub kept: usize,
}

/// Deletes the function's old versions: every one that is neither live, pinned, nor among
/// the newest `keep`.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/functions/{function}/versions/prune",
    tag = "versions", params(FunctionPath), request_body = PruneVersions,
    responses((status = 200, body = PrunedVersions), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn prune_versions(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
    Json(body): Json<PruneVersions>,
) -> Result<Json<PrunedVersions>, ApiError> {
    let (_, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    let keep = super::within("keep", body.keep, PRUNE_KEEP_DEFAULT, 0..=1_000)?;
    let pruned = state.store.prune_versions(function.id, keep).await?;
    let kept = state.store.versions(function.id).await?.len();
    Ok(Json(PrunedVersions { pruned, kept }))
}

/// Makes a saved version the active one, atomically.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/functions/{function}/deploy", tag = "versions",
    params(FunctionPath), request_body = Deploy,
    responses((status = 200, body = FunctionView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the version lacks `fn on_schedule(event)` and the function has schedules")))]
pub async fn deploy(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
    Json(body): Json<Deploy>,
) -> Result<Json<FunctionView>, ApiError> {
    let (tenant, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    super::schedules::keeps_schedules_running(
        &state,
        &function,
        &format!("version {}", body.version),
        Some(body.version),
        None,
    )
    .await?;
    let function = state.store.deploy(function.id, body.version).await?;
    state.route_changed(RouteEvent::Function(function.id)).await;
    Ok(Json(view(&state, &tenant, function)))
}

/// Goes back to an earlier version: the one given, or the one before the active version. The
/// body is optional, and a JSON `null` is no body, as the document (`Option<Rollback>`) says.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/functions/{function}/rollback", tag = "versions",
    params(FunctionPath), request_body = Option<Rollback>,
    responses((status = 200, body = FunctionView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn rollback(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
    body: Option<Json<Option<Rollback>>>,
) -> Result<Json<FunctionView>, ApiError> {
    let (tenant, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    let target = match body.and_then(|Json(b)| b).and_then(|b| b.version) {
        Some(v) => v,
        None => {
            let Some(active) = function.active_version else {
                return Err(ApiError::Conflict(
                    "nothing is deployed, so there is nothing to roll back".into(),
                ));
            };
            state
                .store
                .versions(function.id)
                .await?
                .into_iter()
                .map(|v| v.version)
                .filter(|v| *v < active)
                .max()
                .ok_or_else(|| {
                    ApiError::Conflict(format!("no version before {active} to roll back to"))
                })?
        }
    };
    super::schedules::keeps_schedules_running(
        &state,
        &function,
        &format!("version {target}"),
        Some(target),
        None,
    )
    .await?;
    let function = state.store.deploy(function.id, target).await?;
    state.route_changed(RouteEvent::Function(function.id)).await;
    Ok(Json(view(&state, &tenant, function)))
}

/// The function's variables; a secret's value is never shown.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/functions/{function}/env", tag = "env",
    params(FunctionPath), responses((status = 200, body = Vec<EnvVar>), (status = 404, body = ErrorBody)))]
pub async fn list_env(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
) -> Result<Json<Vec<EnvVar>>, ApiError> {
    let (_, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    Ok(Json(state.store.list_env(function.id).await?))
}

fn validate_env_name(name: &str) -> Result<(), ApiError> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || name.len() > 128 || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(ApiError::Invalid(format!(
            "invalid variable name {:?}: use 1 to 128 of A-Z, a-z, 0-9 and '_', not starting with a digit",
            name.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// Sets a variable (or a secret, whose value is write-only).
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/functions/{function}/env/{name}", tag = "env",
    params(EnvPath), request_body = SetEnv,
    responses((status = 200, body = EnvVar), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_env(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<EnvPath>,
    Json(body): Json<SetEnv>,
) -> Result<Json<EnvVar>, ApiError> {
    let (_, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    validate_env_name(&path.name)?;
    if body.value.contains('\0') {
        return Err(ApiError::Invalid(
            "the value contains a NUL character, which cannot be stored".into(),
        ));
    }
    if body.value.len() > MAX_ENV_VALUE_BYTES {
        return Err(ApiError::TooLarge(format!(
            "the value is {} bytes; the limit is {MAX_ENV_VALUE_BYTES}",
            body.value.len()
        )));
    }
    let existing = state.store.list_env(function.id).await?;
    if existing.len() >= MAX_ENV_VARS && !existing.iter().any(|v| v.name == path.name) {
        return Err(ApiError::Conflict(format!(
            "a function may have at most {MAX_ENV_VARS} variables"
        )));
    }
    state
        .store
        .set_env(function.id, &path.name, &body.value, body.secret)
        .await?;
    state.route_changed(RouteEvent::Function(function.id)).await;
    Ok(Json(EnvVar {
        name: path.name,
        value: (!body.secret).then_some(body.value),
        secret: body.secret,
    }))
}

#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/functions/{function}/env/{name}", tag = "env",
    params(EnvPath), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn unset_env(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<EnvPath>,
) -> Result<StatusCode, ApiError> {
    let (_, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    state.store.unset_env(function.id, &path.name).await?;
    state.route_changed(RouteEvent::Function(function.id)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs the function once with the given request: the given source, a saved version, or the
/// active version, under the function's limits. The answer is the whole result (response,
/// outcome, logs, duration, fuel, peak memory) whatever the outcome. The body is optional, and a
/// JSON `null` is no body, as the document (`Option<TestInvoke>`) says.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/functions/{function}/invoke", tag = "functions",
    params(FunctionPath), request_body = Option<TestInvoke>,
    responses((status = 200, body = InvocationResult), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn test_invoke(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<FunctionPath>,
    body: Option<Json<Option<TestInvoke>>>,
) -> Result<Json<InvocationResult>, ApiError> {
    let body = body.and_then(|Json(b)| b).unwrap_or_default();
    let (tenant, function) =
        reachable_function(&state, &principal, &path.tenant, &path.function).await?;
    // The version recorded: 0 for a source that was never saved.
    let (script, version) = match (body.source, body.version.or(function.active_version)) {
        (Some(source), _) => {
            check_size(&state, &source)?;
            // The guest parses it, in wasm: only what the API promises of every script (no NUL,
            // no nesting past what a parser can take) is checked here; a compile error is the
            // result's `script_error`, as it would be at run time.
            check_text(&source)?;
            (source, 0)
        }
        (None, Some(version)) => (
            state
                .store
                .version_source(function.id, version)
                .await?
                .ok_or(ApiError::NotFound("version"))?,
            version,
        ),
        (None, None) => {
            return Err(ApiError::Conflict(
                "nothing is deployed: give a source or a version".into(),
            ));
        }
    };
    let limits = FunctionLimits::resolve(&function.limits, &tenant.ceilings);
    let Some(_place) = state
        .in_flight
        .try_acquire(Slot::Function(function.id), limits.concurrency)
    else {
        return Err(ApiError::TooManyRequests {
            message: format!(
                "{} invocations of this function are running, its concurrency limit",
                limits.concurrency
            ),
            retry_after: 1,
        });
    };
    let r = body.request;
    let request = InvocationRequest {
        method: r.method.unwrap_or_else(|| "GET".into()),
        path: r.path.unwrap_or_else(|| "/".into()),
        query: r.query,
        headers: r.headers,
        body: r.body,
    };
    let event = match body.schedule {
        Some(id) => {
            let schedule = state
                .store
                .schedule(id)
                .await?
                .filter(|s| s.function_id == function.id)
                .ok_or(ApiError::NotFound("schedule"))?;
            let now = crate::store::now_ms();
            Some(picloud_store::schedule_spec::event_json(
                id,
                now,
                now,
                &schedule.payload_value(),
                false,
            ))
        }
        None => None,
    };
    let owner = FunctionRef::new(tenant.name.clone(), function.name.clone());
    let env = state
        .store
        .env_values(function.id)
        .await?
        .into_iter()
        .collect();
    // Recorded as `cancelled` if the caller goes away before the answer (see the endpoints).
    let unanswered = Unanswered::new(
        state.recorder.as_deref(),
        InvocationRecordTemplate {
            tenant_id: tenant.id,
            function_id: function.id,
            version,
            trigger: Trigger::Test,
        },
    );
    let result = state
        .invoker
        .invoke(Invocation {
            tenant_id: tenant.id,
            owner: &owner,
            script: &script,
            request: &request,
            limits: &executor_limits(&limits),
            env: &env,
            event: event.as_deref(),
        })
        .await;
    unanswered.answered();
    if let Some(recorder) = &state.recorder {
        let record = InvocationRecord::new(tenant.id, function.id, version, Trigger::Test, &result);
        let record = match body.schedule {
            Some(id) => record.scheduled_by(id),
            None => record.answering(&request),
        };
        recorder.record_spooled(record).await;
    }
    Ok(Json(result))
}
