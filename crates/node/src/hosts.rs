//! Origins (DESIGN.md §9): a function's response must never run with the dashboard's origin,
//! nor with another tenant's. Each tenant's functions answer on a host of its own,
//! `{tenant}.{functions domain}` (`http://demo.localhost:8080/hello` on a developer machine:
//! browsers and curl resolve `*.localhost` to the loopback address), so that a page a function
//! serves shares cookies and storage with that tenant's functions only. The dashboard and the
//! API live on every other host name.
//!
//! The path form `/fn/{tenant}/{function}` stays, for API clients; there the response comes
//! from the dashboard's origin, so it is sandboxed (`Content-Security-Policy: sandbox`: no
//! script runs, and the page gets an opaque origin of its own) and no service worker can be
//! registered from it.

use std::convert::Infallible;

use axum::Router;
use axum::extract::{Query, Request};
use axum::http::{Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use picloud_edge::ApiError;
use picloud_store::{AnyStore, validate_name};
use tower::ServiceExt;

/// Where tenants' own hosts are: `{tenant}.{domain}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionHosts {
    domain: String,
}

/// A functions domain that cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid functions domain {0:?}: give a host name such as `fn.example.com` or `localhost`, without scheme or port"
)]
pub struct InvalidDomain(String);

impl FunctionHosts {
    /// # Errors
    ///
    /// [`InvalidDomain`] unless `domain` is a host name (dot-separated labels of letters,
    /// digits and `-`), without scheme, port or path.
    pub fn new(domain: &str) -> Result<Self, InvalidDomain> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let valid = !domain.is_empty()
            && domain.len() <= 200
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid {
            return Err(InvalidDomain(domain));
        }
        Ok(Self { domain })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The host name `tenant`'s functions answer on.
    pub fn host_of(&self, tenant: &str) -> String {
        format!("{tenant}.{}", self.domain)
    }

    /// The tenant whose own host `host` is (a `Host` header's value: a port is ignored, case
    /// too); `None` for any other host, the dashboard's included.
    pub fn tenant_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = match host.rsplit_once(':') {
            // An IPv6 literal has colons of its own; it is never a tenant's host.
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let cut = name.len().checked_sub(self.domain.len() + 1)?;
        // Checked: the host may hold multi-byte characters (`?domain=` of the TLS question
        // is any text), and a cut inside one must answer "no tenant", not panic.
        let (tenant, rest) = name.split_at_checked(cut)?;
        let domain = rest.strip_prefix('.')?;
        if !domain.eq_ignore_ascii_case(&self.domain) || validate_name(tenant).is_err() {
            return None;
        }
        Some(tenant)
    }
}

/// Put on a request that arrived on its tenant's own host: its response runs in that tenant's
/// origin and needs no sandbox.
#[derive(Debug, Clone, Copy)]
pub struct OnTenantHost;

/// The request's host: its `Host` header, or the authority of its URI (HTTP/2).
fn host(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// Serves a tenant's host from `functions` (the endpoints' router: `/{function}/…` there is
/// `/fn/{tenant}/{function}/…`) and every other host from `main`. A tenant's host serves its
/// functions and nothing else: no dashboard, no API.
pub fn route_by_host(hosts: FunctionHosts, functions: Router, main: Router) -> Router {
    Router::new().fallback_service(tower::service_fn(move |mut req: Request| {
        let tenant = host(&req)
            .and_then(|h| hosts.tenant_of(h))
            .map(str::to_string);
        let functions = functions.clone();
        let main = main.clone();
        async move {
            let Some(tenant) = tenant else {
                return main.oneshot(req).await;
            };
            let path = req.uri().path();
            if path == "/" {
                let error = ApiError::NotFound("function: call /{function} on a tenant's host");
                return Ok::<_, Infallible>(error.into_response());
            }
            let path_and_query = match req.uri().query() {
                Some(q) => format!("/fn/{tenant}{path}?{q}"),
                None => format!("/fn/{tenant}{path}"),
            };
            match Uri::try_from(path_and_query) {
                Ok(uri) => *req.uri_mut() = uri,
                Err(_) => return Ok(ApiError::NotFound("function").into_response()),
            }
            req.extensions_mut().insert(OnTenantHost);
            functions.oneshot(req).await
        }
    }))
}

#[derive(Debug, serde::Deserialize)]
struct AskQuery {
    domain: String,
}

/// `GET /_picloud/tls-ask?domain=…`, what Caddy's on-demand TLS asks before it obtains a
/// certificate for a host name: 200 for the host of an existing tenant, 404 for anything else,
/// so that nobody makes Caddy request certificates for names of their choosing. Caddy asks
/// the upstream directly; its own site answers `/_picloud/*` 404 to the public.
pub fn tls_ask_router(store: AnyStore, hosts: FunctionHosts) -> Router {
    Router::new().route(
        "/_picloud/tls-ask",
        get(move |query: Result<Query<AskQuery>, _>| {
            let store = store.clone();
            let hosts = hosts.clone();
            async move {
                let Ok(Query(AskQuery { domain })) = query else {
                    return ApiError::BadRequest("give ?domain=".into()).into_response();
                };
                let Some(tenant) = hosts.tenant_of(&domain) else {
                    return ApiError::NotFound("tenant host").into_response();
                };
                match store.tenant_by_name(tenant).await {
                    Ok(Some(_)) => "ok".into_response(),
                    Ok(None) => ApiError::NotFound("tenant host").into_response(),
                    Err(e) => ApiError::from(e).into_response(),
                }
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_host_is_recognised_and_no_other() {
        let hosts = FunctionHosts::new("Fn.Example.com").expect("a domain");
        assert_eq!(hosts.domain(), "fn.example.com");
        assert_eq!(hosts.host_of("demo"), "demo.fn.example.com");
        for (host, tenant) in [
            ("demo.fn.example.com", Some("demo")),
            ("demo.fn.example.com:8443", Some("demo")),
            ("DEMO.FN.EXAMPLE.COM", None), // tenant names are lower case; the host is not one
            ("demo.fn.example.com.", Some("demo")),
            ("fn.example.com", None),
            ("a.b.fn.example.com", None),
            ("demofn.example.com", None),
            ("demo.fn.example.org", None),
            ("[::1]:8080", None),
            ("127.0.0.1:8080", None),
            ("-x.fn.example.com", None),
        ] {
            assert_eq!(hosts.tenant_of(host), tenant, "{host}");
        }
        let local = FunctionHosts::new("localhost").expect("a domain");
        assert_eq!(local.tenant_of("t1.localhost:8080"), Some("t1"));
        assert_eq!(local.tenant_of("localhost:8080"), None);
    }

    #[test]
    fn hostile_hosts_are_no_tenants_host() {
        let hosts = FunctionHosts::new("localhost").expect("a domain");
        let long = format!("{}.localhost", "a".repeat(100_000));
        for host in [
            "aééééé",
            "aéééééé",
            "t1\0.localhost",
            "t1.localhost\0",
            "\u{1F600}.localhost",
            "t\u{1F600}.localhost",
            ".localhost",
            "",
            ":",
            long.as_str(),
        ] {
            assert_eq!(hosts.tenant_of(host), None, "{host:?}");
        }
        // Any run of digits is a port (an empty one too, as RFC 9110 allows).
        for host in ["t1.localhost:", "t1.localhost:99999999999999999999"] {
            assert_eq!(hosts.tenant_of(host), Some("t1"), "{host:?}");
        }
    }

    #[test]
    fn a_domain_is_a_host_name() {
        for bad in [
            "",
            "http://x.com",
            "x.com:80",
            "x..com",
            "x.com/a",
            "-x.com",
            "ünï.com",
        ] {
            assert!(FunctionHosts::new(bad).is_err(), "{bad}");
        }
    }
}
