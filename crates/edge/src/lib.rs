//! What the control plane's API and a node's function endpoints share at the HTTP edge: every
//! error as a status and a JSON body ([`ApiError`]), the body caps and the drain of a refused
//! body, bearer tokens (their in-memory cache and the check, [`tokens`]), the in-flight
//! counters that both a test invocation and an endpoint count against ([`InFlight`]), and the
//! metrics port. The two planes never import each other; both import this.

mod error;
mod in_flight;
pub mod tokens;

pub use error::{
    ApiError, BodyTimedOut, ErrorBody, ErrorDetail, Json, Path, ScriptError, api_body_too_large,
    declared_length, drain_refused_body, is_body_timeout,
};
pub use in_flight::{InFlight, InFlightGuard, Slot};
pub use tokens::{Principal, TOKEN_PREFIX, Tokens, authenticate, start_tokens};

/// The server's metrics in the Prometheus text format: everything, or only `tenant`'s
/// function series. A node implements it; the API serves a tenant's share.
pub trait MetricsSource: Send + Sync + 'static {
    fn render(&self, tenant: Option<&str>) -> String;
}
