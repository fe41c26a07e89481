//! `POST /api/v1/format`: the Rhai pretty-printer (`picloud-rhai-fmt`) for the dashboard's
//! Format button and any editor.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiState, ErrorBody, Json, Principal};
use picloud_edge::ScriptError;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FormatRequest {
    #[serde(deserialize_with = "crate::script::without_bom")]
    pub source: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Formatted {
    pub formatted: String,
}

/// Formats a Rhai script. A script that does not parse is answered 422 with Rhai's first error
/// and its line and column, and nothing else.
#[utoipa::path(post, path = "/api/v1/format", tag = "format", request_body = FormatRequest,
    responses((status = 200, body = Formatted), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn format(
    State(state): State<ApiState>,
    _principal: Principal,
    Json(body): Json<FormatRequest>,
) -> Result<Json<Formatted>, ApiError> {
    let limit = state.config.max_script_bytes;
    if body.source.len() > limit {
        return Err(ApiError::TooLarge(format!(
            "the script is {} bytes; the limit is {limit}",
            body.source.len()
        )));
    }
    // Formatting is CPU work (milliseconds for a large script): off the async threads.
    let result = tokio::task::spawn_blocking(move || picloud_rhai_fmt::format(&body.source))
        .await
        .map_err(|_| ApiError::Internal)?;
    match result {
        Ok(formatted) => Ok(Json(Formatted { formatted })),
        Err(picloud_rhai_fmt::FormatError::Parse {
            message,
            line,
            column,
        }) => Err(ApiError::Compile(ScriptError {
            message,
            line: Some(line),
            column: Some(column),
        })),
        Err(e @ picloud_rhai_fmt::FormatError::Internal(_)) => {
            Err(ApiError::Invalid(e.to_string()))
        }
    }
}
