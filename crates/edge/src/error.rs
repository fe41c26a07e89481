//! Every error the API answers with: a status and `{"error": {"kind", "message", …}}`. Input
//! the server cannot use is a 4xx naming the problem; only a failing database is a 5xx, and
//! its details go to the log, not to the client.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use picloud_store::limits::LimitError;
use picloud_store::{InvalidName, StoreError};

/// A script the platform refuses, with where (1-based line and column) when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, thiserror::Error)]
#[error("{message}")]
pub struct ScriptError {
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

impl From<ScriptError> for ApiError {
    fn from(e: ScriptError) -> Self {
        Self::Compile(e)
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable cause: `unauthorized`, `not_found`, `invalid`, `conflict`,
    /// `too_large`, `bad_request`, `unsupported_media_type`, `method_not_allowed`,
    /// `too_many_requests`, `compile_error`, `request_timeout`, `overloaded`, `quota`,
    /// `unavailable`, `storage_full`, `internal`.
    pub kind: &'static str,
    pub message: String,
    /// For `compile_error`: where in the script (1-based), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(std::borrow::Cow<'static, str>),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    /// Over a limit; the client may retry after `retry_after` seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// A tenant's storage quota (versions, records) would be passed; the message names it.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The request's body did not arrive in time (the listener's body-read timeout).
    #[error("{0}")]
    RequestTimeout(String),
    /// The server as a whole is at a cap (not the tenant): retry after `retry_after` seconds.
    #[error("{message}")]
    Overloaded { message: String, retry_after: u64 },
    #[error("the script does not compile: {0}")]
    Compile(ScriptError),
    #[error("the database does not answer")]
    Unavailable,
    /// The database's disk is full: nothing was written, and reads still work.
    #[error(
        "the server's storage is full: nothing was saved; try again once the operator has freed space"
    )]
    StorageFull,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Invalid(_) | Self::Compile(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict(_) | Self::QuotaExceeded(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Invalid(_) => "invalid",
            Self::Conflict(_) => "conflict",
            Self::QuotaExceeded(_) => "quota_exceeded",
            Self::TooLarge(_) => "too_large",
            Self::BadRequest(_) => "bad_request",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::RequestTimeout(_) => "request_timeout",
            Self::Overloaded { .. } => "overloaded",
            Self::Compile(_) => "compile_error",
            Self::Unavailable => "unavailable",
            Self::StorageFull => "storage_full",
            Self::Internal => "internal",
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (line, column) = match self {
            Self::Compile(e) => (e.line, e.column),
            _ => (None, None),
        };
        ErrorBody {
            error: ErrorDetail {
                kind: self.kind(),
                message: self.to_string(),
                line,
                column,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if matches!(self, Self::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::TooManyRequests { retry_after, .. } | Self::Overloaded { retry_after, .. } =
            &self
        {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.max(&1).to_owned()),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(what) => Self::Conflict(format!("{what} already exists")),
            StoreError::Quota(message) => Self::QuotaExceeded(message),
            StoreError::Refused(message) => Self::Conflict(message),
            StoreError::Database(ref inner) if is_unavailable(inner) => {
                tracing::warn!(error = %e, "the database is unavailable");
                Self::Unavailable
            }
            StoreError::Database(ref inner) if is_storage_full(inner) => {
                tracing::error!(error = %e, "the database's storage is full");
                Self::StorageFull
            }
            other => {
                tracing::error!(error = %other, "store failure");
                Self::Internal
            }
        }
    }
}

/// SQLite's `SQLITE_FULL` (13, with its extended codes) or PostgreSQL's class 53100
/// `disk_full`.
fn is_storage_full(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(d) = e else {
        return false;
    };
    d.code()
        .is_some_and(|c| c == "53100" || c.parse::<u32>().is_ok_and(|n| n & 0xff == 13))
        || d.message().contains("database or disk is full")
}

/// A lost or refused connection: the client may retry; the pool reconnects by itself.
fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
    ) || matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("57P")))
}

impl From<InvalidName> for ApiError {
    fn from(e: InvalidName) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        Self::Invalid(e.to_string())
    }
}

fn from_rejection(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(text),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Invalid(text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
        _ => ApiError::BadRequest(text),
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s: malformed JSON is 400, wrong types 422,
/// a missing content type 415, a body past the cap 413 — each with a JSON body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared = declared_length(req.headers());
        match <axum::Json<T> as FromRequest<S>>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(api_body_too_large(declared))
            }
            Err(e) => Err(json_rejection(e)),
        }
    }
}

/// For the routes whose body is all optional (rollback, test-invoke): no body and no content
/// type is "no options"; anything else must be valid JSON.
impl<S: Send + Sync, T: DeserializeOwned> OptionalFromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if req.headers().get(header::CONTENT_TYPE).is_none() {
            return Ok(None);
        }
        <Self as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    if is_body_timeout(&e) {
        return ApiError::RequestTimeout(e.body_text());
    }
    from_rejection(e.status(), in_users_terms(&e.body_text()))
}

/// A JSON body's refusal in the caller's terms, not the server's: serde names our Rust types
/// (`expected struct LimitOverrides`, `unknown variant SetEnv`) and axum its internals.
pub(crate) fn in_users_terms(text: &str) -> String {
    let text = text
        .replace(
            "Failed to deserialize the JSON body into the target type: ",
            "the JSON body does not fit: ",
        )
        .replace(
            "Failed to parse the request body as JSON: ",
            "the body is not JSON: ",
        );
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    // `struct Name` and `enum Name`: what the caller knows as an object and a choice.
    while let Some(at) = rest.find("struct ").or_else(|| rest.find("enum ")) {
        let (before, from) = rest.split_at(at);
        let (word, what) = if from.starts_with("struct ") {
            ("struct ", "an object")
        } else {
            ("enum ", "one of the allowed values")
        };
        let after = &from[word.len()..];
        let name_len = after
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(after.len());
        out.push_str(before);
        if name_len > 0 && after.starts_with(|c: char| c.is_ascii_uppercase()) {
            out.push_str(what);
            rest = &after[name_len..];
        } else {
            out.push_str(word);
            rest = after;
        }
    }
    out.push_str(rest);
    for (rust, json) in [
        ("u64", "a whole number"),
        ("u32", "a whole number"),
        ("u16", "a whole number"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("a boolean", "true or false"),
    ] {
        out = out.replace(&format!("expected {rust}"), &format!("expected {json}"));
    }
    out
}

/// A request body did not arrive within the listener's body-read timeout (what reading it
/// fails with; the API and the endpoints answer `408`).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0} s")]
pub struct BodyTimedOut(pub u64);

/// Whether an error (a body extractor's rejection, say) comes of [`BodyTimedOut`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        cause = e.source();
    }
    false
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(e) => Err(path_rejection(e)),
        }
    }
}

fn path_rejection(e: PathRejection) -> ApiError {
    // A path that names nothing that could exist (a version that is not a number, say).
    ApiError::BadRequest(e.body_text())
}

/// The `Content-Length` a request declares, if it is a number.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How much of a refused body is read and thrown away before the refusal goes out.
const LINGER_BYTES: usize = 32 << 20;
/// How long reading a refused body may take.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops what is left of a body being refused (413), up to 32 MiB or 2 s, before
/// the answer goes out. A server that answers from the declared length and closes at once
/// leaves the rest unread, the kernel resets the connection, and a client that writes its
/// whole body before reading (the CLI among them) sees "broken pipe" instead of the 413 and
/// its reason. Bounded, so a hostile sender costs one connection for two seconds at most.
pub async fn drain_refused_body(body: axum::body::Body) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > LINGER_BYTES {
                break;
            }
        }
    })
    .await;
}

/// What a body past the API's cap is answered: its declared length and the flags that set
/// the cap.
pub fn api_body_too_large(declared: Option<u64>) -> ApiError {
    ApiError::TooLarge(match declared {
        Some(n) => format!(
            "the request body is {n} bytes, more than this server takes (its \
             --max-script-bytes and --max-body-bytes)"
        ),
        None => "the request body is more than this server takes (its \
                 --max-script-bytes and --max-body-bytes)"
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde and axum speak of our Rust types; the caller reads JSON words.
    #[test]
    fn refusals_speak_of_json_not_rust() {
        let said = in_users_terms(
            "Failed to deserialize the JSON body into the target type: limits: invalid type: \
             string \"32MB\", expected u64 at line 1 column 30",
        );
        assert_eq!(
            said,
            "the JSON body does not fit: limits: invalid type: string \"32MB\", expected a \
             whole number at line 1 column 30"
        );
        let said =
            in_users_terms("limits: invalid type: integer `1`, expected struct LimitOverrides");
        assert!(said.ends_with("expected an object"), "{said}");
        let said = in_users_terms("unknown variant `x`, expected enum Trigger");
        assert!(
            said.ends_with("expected one of the allowed values"),
            "{said}"
        );
        assert_eq!(in_users_terms("a struct of words"), "a struct of words");
        // Parts of the text come from the caller's JSON: any bytes pass through untouched, and
        // nothing panics at the ends or on multi-byte characters.
        for text in [
            "struct ",
            "enum",
            "expected struct Ä\0",
            "invalid type: string \"struct Über\u{7}\"",
            "struct struct struct X",
        ] {
            let _ = in_users_terms(text);
        }
        let huge = format!("expected {}", "struct X ".repeat(100_000));
        assert!(in_users_terms(&huge).starts_with("expected an object"));
    }
}
