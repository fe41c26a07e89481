//! `/fn/{tenant}/{function}/{*rest}`: runs a function's active version.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use picloud_edge::{
    ApiError, Tokens, authenticate, declared_length, drain_refused_body, is_body_timeout,
};
use picloud_executor_protocol::{Invocation, Invoker};
use picloud_shared::{FunctionRef, InvocationRequest, Outcome};
use picloud_store::limits::executor_limits;
use picloud_store::records::{InvocationRecordTemplate, Unanswered};
use picloud_store::{InvocationRecord, Recorder, Trigger};

use crate::RoutingTable;
use crate::hosts::OnTenantHost;
use crate::limits::{Ingress, Rejection};

/// What the endpoints share.
#[derive(Clone)]
pub struct EndpointState {
    pub table: Arc<RoutingTable>,
    /// The tokens of token-protected functions, checked from memory.
    pub tokens: Arc<Tokens>,
    pub invoker: Arc<dyn Invoker>,
    /// Rates and concurrency limits.
    pub ingress: Arc<Ingress>,
    pub recorder: Arc<Recorder>,
    /// Largest request body, in bytes; larger is answered 413.
    pub max_body_bytes: usize,
}

impl std::fmt::Debug for EndpointState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointState")
            .field("routes", &self.table.len())
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// The function endpoints, their state applied.
pub fn router(state: EndpointState) -> Router {
    Router::new()
        .route("/fn/{tenant}/{function}", any(invoke))
        .route("/fn/{tenant}/{function}/", any(invoke))
        .route("/fn/{tenant}/{function}/{*rest}", any(invoke))
        .with_state(state)
}

async fn invoke(
    State(state): State<EndpointState>,
    on_tenant_host: Option<Extension<OnTenantHost>>,
    Path(params): Path<BTreeMap<String, String>>,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The path form answers from the dashboard's origin: sandboxed (see `hosts`).
    let sandboxed = on_tenant_host.is_none();
    let mut response = if sandboxed && headers.contains_key("service-worker") {
        ApiError::Forbidden(
            "a service worker cannot be registered from /fn/: serve it from the tenant's own host"
                .into(),
        )
        .into_response()
    } else {
        match run(&state, &params, query, method, headers, body).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        }
    };
    if sandboxed {
        // Appended, not inserted: a script's own policy still applies beside it.
        response.headers_mut().append(
            axum::http::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    }
    response
}

async fn run(
    state: &EndpointState,
    params: &BTreeMap<String, String>,
    query: BTreeMap<String, String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (Some(tenant), Some(function)) = (params.get("tenant"), params.get("function")) else {
        return Err(ApiError::NotFound("function"));
    };
    let too_large = || {
        ApiError::TooLarge(format!(
            "the request body is larger than {} bytes",
            state.max_body_bytes
        ))
    };
    // A declared length past the cap is refused before anything else is looked at.
    if declared_length(&headers).is_some_and(|n| n > state.max_body_bytes as u64) {
        drain_refused_body(body).await;
        return Err(too_large());
    }
    let route = state
        .table
        .get(tenant, function)
        .ok_or(ApiError::NotFound("function"))?;
    let refused = |(why, error): (Rejection, ApiError)| {
        state
            .table
            .metrics()
            .rejected(&route.tenant, &route.function, why);
        error
    };
    if !route.public {
        // From the token cache, without a query (a hash and a lookup: a flood of forged tokens
        // costs that). No token, a bad one or another tenant's is answered exactly as a
        // function that does not exist: a private function does not reveal itself, not even
        // through its rate limit's 429.
        let allowed = authenticate(&state.tokens, &headers)
            .is_ok_and(|p| p.admin || p.tenant_id == Some(route.tenant_id));
        if !allowed {
            return Err(ApiError::NotFound("function"));
        }
    }
    state.ingress.within_rates(&route).map_err(refused)?;
    // Only now, the caller known and within its rates, is its body read.
    let body = read_body(body, state.max_body_bytes)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => too_large(),
            BodyError::TimedOut(message) => ApiError::RequestTimeout(message),
            BodyError::Broken(message) => ApiError::BadRequest(message),
        })?;
    let _places = state.ingress.places(&route).await.map_err(refused)?;
    let request = InvocationRequest {
        method: method.to_string(),
        path: format!("/{}", params.get("rest").map_or("", String::as_str)),
        query,
        headers: script_headers(&headers, route.forward_authorization),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let owner = FunctionRef::new(route.tenant.clone(), route.function.clone());
    // Dropped mid-invocation (the client went away, and axum dropped this future): recorded
    // as `cancelled`; the executor stops the invocation and the concurrency places free up.
    let unanswered = Unanswered::new(
        Some(&state.recorder),
        InvocationRecordTemplate {
            tenant_id: route.tenant_id,
            function_id: route.function_id,
            version: route.version,
            trigger: Trigger::Http,
        },
    )
    .observed(|result| {
        state
            .table
            .metrics()
            .observe(&route.tenant, &route.function, result)
    });
    let result = state
        .invoker
        .invoke(Invocation {
            tenant_id: route.tenant_id,
            owner: &owner,
            script: &route.source,
            request: &request,
            limits: &executor_limits(&route.limits),
            env: &route.env,
            event: None,
        })
        .await;
    unanswered.answered();
    state
        .table
        .metrics()
        .observe(&route.tenant, &route.function, &result);
    let record = InvocationRecord::new(
        route.tenant_id,
        route.function_id,
        route.version,
        Trigger::Http,
        &result,
    )
    .answering(&request);
    let invocation = record.id;
    // In the spool before the answer leaves: an answered request's record survives this
    // process being killed the moment after.
    state.recorder.record_spooled(record).await;
    Ok(match result.response {
        Some(r) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
            // 204 and 304 have no body (RFC 9110, 15.3.5 and 15.4.5), so no content length
            // either: whatever body the script gave is not sent.
            let body = if matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) {
                Body::empty()
            } else {
                Body::from(r.body)
            };
            let mut response = (status, body).into_response();
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
            // Internal failures are logged, not shown to the client. A public function's caller
            // may be anyone: it gets the kind in words and the invocation's id, never the
            // script's error text nor its position (the tenant reads them in the record); a
            // private function's caller holds its tenant's token and gets the details.
            let message = match &result.outcome {
                Outcome::Internal { message } => {
                    tracing::error!(%tenant, %function, %message, "invocation failed internally");
                    "internal error".to_string()
                }
                other if route.public => format!(
                    "{}: its tenant finds the details in invocation {invocation}'s record",
                    other.describe_publicly()
                ),
                other => other.describe(),
            };
            let body = serde_json::json!({ "error": {
                "kind": result.outcome.kind(),
                "message": message,
                "invocation": invocation,
            } });
            let mut response = (status, axum::Json(body)).into_response();
            if matches!(result.outcome, Outcome::Overloaded { .. }) {
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from_static("1"),
                );
            }
            response
        }
    })
}

/// Why a request body could not be read.
enum BodyError {
    TooLarge,
    TimedOut(String),
    Broken(String),
}

/// Reads a whole body of at most `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            BodyError::TooLarge
        } else if is_body_timeout(&e) {
            BodyError::TimedOut(format!("the request body did not arrive in time: {e}"))
        } else {
            BodyError::Broken(format!("the request body could not be read: {e}"))
        }
    })
}

/// Whether reading a body stopped at its limit.
fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Cookies whose names start with this (in any case, also behind `__Host-` or `__Secure-`)
/// are the platform's: a script never sees them.
pub const PLATFORM_COOKIE_PREFIX: &str = "picloud";

/// The request headers a script sees. `authorization` is removed unless the function opted in
/// ([`Route::forward_authorization`](picloud_store::Route)), and always when it carries
/// a PiCloud token: a private function is called with one, and tenant code that saw it could
/// keep it (`kv_set`, a log line) and act as its caller. Platform cookies are removed from
/// `cookie`. Values that are not visible ASCII are left out, as before.
fn script_headers(headers: &HeaderMap, forward_authorization: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let Ok(value) = value.to_str() else {
            continue;
        };
        if name == axum::http::header::AUTHORIZATION {
            if !forward_authorization || value.contains(picloud_edge::TOKEN_PREFIX) {
                continue;
            }
        } else if name == axum::http::header::COOKIE {
            let kept = without_platform_cookies(value);
            if !kept.is_empty() {
                out.insert(name.as_str().to_string(), kept);
            }
            continue;
        }
        out.insert(name.as_str().to_string(), value.to_string());
    }
    out
}

/// A `cookie` header's pairs but the platform's.
fn without_platform_cookies(header: &str) -> String {
    header
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("").trim();
            let name = name
                .strip_prefix("__Host-")
                .or_else(|| name.strip_prefix("__Secure-"))
                .unwrap_or(name);
            !name
                .get(..PLATFORM_COOKIE_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(PLATFORM_COOKIE_PREFIX))
        })
        .filter(|pair| !pair.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::try_from(*k).expect("name"),
                HeaderValue::try_from(*v).expect("value"),
            );
        }
        map
    }

    #[test]
    fn the_caller_token_never_reaches_the_script() {
        let with_token = headers(&[
            ("authorization", "Bearer pc_0123456789abcdef"),
            ("x-other", "kept"),
        ]);
        for forward in [false, true] {
            let seen = script_headers(&with_token, forward);
            assert_eq!(seen.get("authorization"), None, "forward {forward}");
            assert_eq!(seen.get("x-other").map(String::as_str), Some("kept"));
        }
        let own = headers(&[("authorization", "Bearer app-secret")]);
        assert_eq!(script_headers(&own, false).get("authorization"), None);
        assert_eq!(
            script_headers(&own, true)
                .get("authorization")
                .map(String::as_str),
            Some("Bearer app-secret")
        );
    }

    #[test]
    fn platform_cookies_are_removed() {
        let cookies = headers(&[(
            "cookie",
            "app=1; picloud_session=x; __Host-PiCloud-t=y; other=2; __Secure-picloudz=3",
        )]);
        let seen = script_headers(&cookies, false);
        assert_eq!(
            seen.get("cookie").map(String::as_str),
            Some("app=1; other=2")
        );
        let only = headers(&[("cookie", "picloud=1")]);
        assert_eq!(script_headers(&only, false).get("cookie"), None);
    }
}
