//! A tenant's key-value store as its owner and the admin see it: list the keys, read one,
//! delete one. Scripts write it (`kv_set`); this is how a person looks at what they wrote.
//!
//! Keys travel in the query (`?key=`), not the path: a key may hold `/`, `?` or spaces.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::tenants::TenantPath;
use super::{ApiError, ApiState, ErrorBody, Json, Path, Principal, reachable_tenant, within};

/// Longest key or prefix the API takes, in bytes: far past any key a script could store (the
/// server's `--kv-max-key-bytes`), short enough that a query never carries a flood.
const MAX_KEY_BYTES: usize = 4096;
/// Keys one page lists when not told.
const DEFAULT_PAGE: u32 = 100;
/// Most keys one page lists.
const MAX_PAGE: u32 = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only keys that start with this. Default: every key.
    pub prefix: Option<String>,
    /// Only keys after this one (the last key of the previous page).
    pub after: Option<String>,
    /// How many, from 1 to 1,000. Default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    /// The key, exactly as the script wrote it.
    pub key: String,
}

/// One page of keys, in byte order.
#[derive(Debug, Serialize, ToSchema)]
pub struct KvKeys {
    pub keys: Vec<String>,
    /// Give it as `after` for the next page; `null` on the last page.
    pub next: Option<String>,
}

/// A key and its value, as the script stored it.
#[derive(Debug, Serialize, ToSchema)]
pub struct KvEntry {
    pub key: String,
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
}

/// A key or prefix as the store can hold it.
fn check(what: &str, key: &str) -> Result<(), ApiError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::BadRequest(format!(
            "`{what}` is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if key.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "`{what}` holds a NUL character, which no key can"
        )));
    }
    Ok(())
}

/// The tenant's keys, a page at a time.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/kv", tag = "kv", params(TenantPath, ListQuery),
    responses((status = 200, body = KvKeys), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn list_keys(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<TenantPath>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<KvKeys>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let tenant = reachable_tenant(&state, &principal, &path.tenant).await?;
    let limit = within("limit", query.limit, DEFAULT_PAGE, 1..=MAX_PAGE)?;
    let prefix = query.prefix.unwrap_or_default();
    check("prefix", &prefix)?;
    if let Some(after) = &query.after {
        check("after", after)?;
    }
    let keys = state
        .store
        .kv_list(tenant.id, &prefix, query.after.as_deref(), limit)
        .await?;
    let full = keys.len() == limit as usize;
    let next = full.then(|| keys.last().cloned()).flatten();
    Ok(Json(KvKeys { keys, next }))
}

/// One key's value.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/kv/entry", tag = "kv", params(TenantPath, KeyQuery),
    responses((status = 200, body = KvEntry), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn get_entry(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<TenantPath>,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Result<Json<KvEntry>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let tenant = reachable_tenant(&state, &principal, &path.tenant).await?;
    check("key", &query.key)?;
    let text = state
        .store
        .kv_get(tenant.id, &query.key)
        .await?
        .ok_or(ApiError::NotFound("key"))?;
    // Stored as JSON text by `kv_set`; anything else would be a value written by hand.
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok(Json(KvEntry {
        key: query.key,
        value,
    }))
}

/// Deletes one key.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/kv/entry", tag = "kv", params(TenantPath, KeyQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_entry(
    State(state): State<ApiState>,
    principal: Principal,
    Path(path): Path<TenantPath>,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let tenant = reachable_tenant(&state, &principal, &path.tenant).await?;
    check("key", &query.key)?;
    if state.store.kv_delete(tenant.id, &query.key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("key"))
    }
}
