//! Tenants (admin only, but a tenant may read itself), the caller's identity, and tokens.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiState, ErrorBody, Json, Path, Principal, reachable_tenant};
use crate::store::limits::{FunctionLimits, LimitOverrides};
use crate::store::routes::RouteEvent;
use crate::store::validate_name;
use crate::store::{Tenant, Token};
use picloud_edge::tokens::{generate_token, hash_token};

/// A tenant with the ceilings in force on its functions' limits.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub name: String,
    pub created_at: i64,
    /// The most any of its functions may choose.
    pub ceilings: FunctionLimits,
    /// The ceilings the admin chose (`null`: the platform's).
    pub chosen_ceilings: LimitOverrides,
    /// Whether its schedules may fire more than once a minute (an admin's choice).
    pub sub_minute_schedules: bool,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            name: t.name,
            created_at: t.created_at,
            ceilings: FunctionLimits::CEILING.with(&t.ceilings),
            chosen_ceilings: t.ceilings,
            sub_minute_schedules: t.sub_minute_schedules,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// `[a-z0-9][a-z0-9-]{0,62}`
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")]
    pub name: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    /// The tenant's name.
    pub tenant: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    pub tenant: String,
    /// The token's id (from the token list).
    pub id: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AdminTokenPath {
    /// The token's id (from the token list).
    pub id: i64,
}

/// Who the presented token is.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// The token's id (as in token lists).
    pub id: i64,
    pub token: String,
    pub admin: bool,
    /// The tenant the token belongs to; `null` for an admin token.
    pub tenant: Option<String>,
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl From<Token> for TokenView {
    fn from(t: Token) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// A new token: its secret is in this answer and nowhere else, ever.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    /// The secret, shown once. Only its hash is stored.
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// `[a-z0-9][a-z0-9-]{0,62}`, to tell tokens apart (`ci`, `laptop`).
    #[schema(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")]
    pub name: String,
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "tenants",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<Json<WhoAmI>, ApiError> {
    let tenant = match principal.tenant_id {
        Some(id) => state.store.tenant(id).await?.map(|t| t.name),
        None => None,
    };
    Ok(Json(WhoAmI {
        id: principal.token_id,
        token: principal.token_name,
        admin: principal.admin,
        tenant,
    }))
}

#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants",
    responses((status = 200, body = Vec<TenantView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_tenants(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<Json<Vec<TenantView>>, ApiError> {
    principal.require_admin()?;
    let tenants = state.store.list_tenants().await?;
    Ok(Json(tenants.into_iter().map(TenantView::from).collect()))
}

#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantView), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_tenant(
    State(state): State<ApiState>,
    principal: Principal,
    Json(body): Json<CreateTenant>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    principal.require_admin()?;
    validate_name(&body.name)?;
    let tenant = state.store.create_tenant(&body.name).await?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}", tag = "tenants", params(TenantPath),
    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody)))]
pub async fn get_tenant(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<TenantPath>,
) -> Result<Json<TenantView>, ApiError> {
    let tenant = reachable_tenant(&state, &principal, &path.tenant).await?;
    Ok(Json(tenant.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// Allow its new schedules to fire more than once a minute (six fields, several seconds).
    /// Off by default: every second is sixty times the runs of every minute. Turning it off
    /// again refuses new ones; the schedules it has keep running until deleted.
    pub sub_minute_schedules: Option<bool>,
}

/// Changes what an admin allows a tenant beyond its ceilings (admin only).
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}", tag = "tenants", params(TenantPath),
    request_body = UpdateTenant,
    responses((status = 200, body = TenantView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn update_tenant(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<TenantPath>,
    Json(body): Json<UpdateTenant>,
) -> Result<Json<TenantView>, ApiError> {
    principal.require_admin()?;
    let mut tenant = reachable_tenant(&state, &principal, &path.tenant).await?;
    if let Some(allowed) = body.sub_minute_schedules {
        tenant = state
            .store
            .set_sub_minute_schedules(tenant.id, allowed)
            .await?;
    }
    Ok(Json(tenant.into()))
}

/// Deletes a tenant with everything it owns (admin only): its tokens stop working, its
/// endpoints answer 404, its schedules stop, and its functions, versions, variables, records
/// and keys are gone. It cannot be undone.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}", tag = "tenants", params(TenantPath),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_tenant(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<TenantPath>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let tenant = reachable_tenant(&state, &principal, &path.tenant).await?;
    state.store.delete_tenant(tenant.id).await?;
    state.route_changed(RouteEvent::Resync).await;
    // Its tokens stop working in this process before the answer, not at the watcher's turn.
    if let Err(e) = state.tokens.apply(&state.store, RouteEvent::Resync).await {
        tracing::warn!(error = %e, "cannot reload the tokens now; the watcher will");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Sets the ceilings on the tenant's function limits (admin only). Fields left out or `null`
/// take the platform's ceilings.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/ceilings", tag = "tenants", params(TenantPath),
    request_body = LimitOverrides,
    responses((status = 200, body = TenantView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_ceilings(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<TenantPath>,
    Json(body): Json<LimitOverrides>,
) -> Result<Json<TenantView>, ApiError> {
    principal.require_admin()?;
    let tenant = reachable_tenant(&state, &principal, &path.tenant).await?;
    body.check_ceilings()?;
    let tenant = state.store.set_tenant_ceilings(tenant.id, &body).await?;
    state.route_changed(RouteEvent::Tenant(tenant.id)).await;
    Ok(Json(tenant.into()))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/tokens", tag = "tokens", params(TenantPath),
    responses((status = 200, body = Vec<TokenView>), (status = 404, body = ErrorBody)))]
pub async fn list_tokens(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<TenantPath>,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let tenant = reachable_tenant(&state, &principal, &path.tenant).await?;
    let tokens = state.store.list_tokens(Some(tenant.id)).await?;
    Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
}

async fn new_token(
    state: &ApiState,
    tenant_id: Option<i64>,
    name: &str,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    validate_name(name)?;
    // Two live tokens of one name could not be told apart in a list, nor revoked by name.
    let same = state
        .store
        .list_tokens(tenant_id)
        .await?
        .into_iter()
        .find(|t| t.name == name && t.revoked_at.is_none());
    if let Some(same) = same {
        return Err(ApiError::Conflict(format!(
            "a live token is already named {name:?} (id {}): choose another name, or revoke it first",
            same.id
        )));
    }
    let secret = generate_token().map_err(|e| {
        tracing::error!(error = %e, "no randomness for a token");
        ApiError::Internal
    })?;
    let token = state
        .store
        .create_token(tenant_id, name, &hash_token(&secret), tenant_id.is_none())
        .await?;
    state.token_changed(token.id).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: token.id,
            name: token.name,
            created_at: token.created_at,
            token: secret,
        }),
    ))
}

/// Creates a token for the tenant. Its secret is in the answer only.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/tokens", tag = "tokens", params(TenantPath),
    request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "a live token of the tenant has that name"),
              (status = 422, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<TenantPath>,
    Json(body): Json<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let tenant = reachable_tenant(&state, &principal, &path.tenant).await?;
    new_token(&state, Some(tenant.id), &body.name).await
}

#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/tokens/{id}", tag = "tokens", params(TokenPath),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<TokenPath>,
) -> Result<StatusCode, ApiError> {
    let tenant = reachable_tenant(&state, &principal, &path.tenant).await?;
    state.store.revoke_token(Some(tenant.id), path.id).await?;
    state.token_changed(path.id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/admin/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenView>), (status = 403, body = ErrorBody)))]
pub async fn list_admin_tokens(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    principal.require_admin()?;
    let tokens = state.store.list_tokens(None).await?;
    Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
}

/// Creates another admin token (admin only). Its secret is in the answer only.
#[utoipa::path(post, path = "/api/v1/admin/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "a live admin token has that name"),
              (status = 422, body = ErrorBody)))]
pub async fn create_admin_token(
    State(state): State<ApiState>,
    principal: Principal,
    Json(body): Json<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    principal.require_admin()?;
    new_token(&state, None, &body.name).await
}

/// Revokes an admin token (admin only). The last one cannot be revoked: nobody could
/// administer the installation any more.
#[utoipa::path(delete, path = "/api/v1/admin/tokens/{id}", tag = "tokens", params(AdminTokenPath),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn revoke_admin_token(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<AdminTokenPath>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let live: Vec<_> = state
        .store
        .list_tokens(None)
        .await?
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .collect();
    if !live.iter().any(|t| t.id == path.id) {
        return Err(ApiError::NotFound("token"));
    }
    if live.len() == 1 {
        return Err(ApiError::Conflict(
            "this is the last admin token: create another before revoking it".into(),
        ));
    }
    state.store.revoke_token(None, path.id).await?;
    state.token_changed(path.id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The metrics of the caller's functions in the Prometheus text format, so that a tenant can
/// point its own Prometheus at it with its token (`authorization: { credentials: … }`). An
/// admin token gets every series. Only on a server that serves endpoints.
#[utoipa::path(get, path = "/api/v1/metrics", tag = "tenants",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn metrics(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let Some(metrics) = &state.metrics else {
        return Err(ApiError::NotFound("metrics on this server"));
    };
    let tenant = match principal.tenant_id {
        None => None,
        Some(id) => Some(
            state
                .store
                .tenant(id)
                .await?
                .ok_or(ApiError::Unauthorized("unknown or revoked token"))?
                .name,
        ),
    };
    // A tenant token never gets the unfiltered text, even for a tenant that vanished.
    if !principal.admin && tenant.is_none() {
        return Err(ApiError::Unauthorized("unknown or revoked token"));
    }
    let text = metrics.render(tenant.as_deref());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
