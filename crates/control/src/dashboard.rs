//! The dashboard (DESIGN.md §6): SvelteKit built to static files (`dashboard/build`), served
//! from disk on the API's origin. Hashed assets under `/_app/immutable/` are cached for a year;
//! every other path that is not a file gets the app shell (`200.html`, never cached), so the
//! app's own routes work on reload. A missing asset is a 404, not the shell, and paths under
//! `/api/` and `/fn/` never reach here (the caller answers those).

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::api::ApiError;
use tower_http::set_header::SetResponseHeaderLayer;

/// Where the built dashboard is: `--dashboard-dir` if given; else `dashboard/build` under the
/// working directory, or in the repository the binary was built from. `None` when none holds
/// `200.html`.
#[must_use]
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    let shell = |d: &Path| d.join("200.html").is_file();
    if let Some(dir) = explicit {
        return shell(dir).then(|| dir.to_path_buf());
    }
    // The working directory (`scripts/run` runs from the repository), then the repository
    // this crate was compiled in, wherever the target directory is.
    let candidates = [
        PathBuf::from("dashboard/build"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboard/build"),
    ];
    candidates.into_iter().find(|d| shell(d))
}

/// The server's last resort: unknown paths under `/api/` and `/fn/` answer the API's JSON 404,
/// every other path the dashboard from `dir` (see [`locate`]) — with `None`, a page saying how
/// to build it, answered 503.
pub fn router(dir: Option<&Path>) -> Router {
    let app = app(dir);
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let app = app.clone();
        async move {
            let path = req.uri().path();
            if path == "/api"
                || path.starts_with("/api/")
                || path == "/fn"
                || path.starts_with("/fn/")
            {
                return Ok::<_, Infallible>(ApiError::NotFound("route").into_response());
            }
            app.oneshot(req).await
        }
    }))
}

fn app(dir: Option<&Path>) -> Router {
    let Some(dir) = dir else {
        return Router::new().fallback(|| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(
                    "<!doctype html><title>PiCloud</title><p>The dashboard is not built. \
                     <code>scripts/run</code> builds it; by hand: \
                     <code>npm --prefix dashboard ci &amp;&amp; npm --prefix dashboard run build</code>, \
                     or point <code>--dashboard-dir</code> at a build.</p>",
                ),
            )
                .into_response()
        });
    };
    // Only an asset that exists is cached for a year: a 404 cached that long would outlive the
    // deploy that adds the file.
    let immutable = tower::ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            |r: &axum::http::Response<_>| {
                Some(HeaderValue::from_static(if r.status().is_success() {
                    "public, max-age=31536000, immutable"
                } else {
                    "no-store"
                }))
            },
        ))
        .service(ServeDir::new(dir.join("_app/immutable")));
    // A path that names a file (`/favicon.ico`, `/robots.txt`) and is missing is a 404; only
    // the app's own routes (no extension) get the shell.
    let files = ServeDir::new(dir);
    let shell = ServeDir::new(dir).fallback(ServeFile::new(dir.join("200.html")));
    let rest = tower::ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        .service(tower::service_fn(move |req: Request| {
            let names_a_file = req
                .uri()
                .path()
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains('.'));
            let (files, shell) = (files.clone(), shell.clone());
            async move {
                let response = if names_a_file {
                    files.oneshot(req).await
                } else {
                    shell.oneshot(req).await
                };
                response.map(IntoResponse::into_response)
            }
        }));
    let policy = HeaderValue::try_from(content_security_policy(dir))
        .unwrap_or_else(|_| HeaderValue::from_static(STRICT_FALLBACK));
    Router::new()
        .nest_service("/_app/immutable", immutable)
        .route_service("/_app/{*rest}", ServeDir::new(dir.join("_app")))
        .fallback_service(rest)
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            policy,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}

/// What the policy is when the shell cannot be read: no inline script at all.
const STRICT_FALLBACK: &str = "default-src 'self'; script-src 'self'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The dashboard's Content-Security-Policy: scripts only from its own origin and the shell's
/// own inline bootstrap (by its SHA-256, read from `200.html` at start), connections only to
/// its own origin (the API), no plugins, no `<base>`, and no page may frame it
/// (`frame-ancestors 'none'`: a tenant's page cannot clickjack the admin). Styles may be inline:
/// the editor injects its own.
fn content_security_policy(dir: &Path) -> String {
    let shell = std::fs::read_to_string(dir.join("200.html")).unwrap_or_default();
    let hashes: String = inline_scripts(&shell)
        .map(|script| {
            use base64::Engine as _;
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(script.as_bytes());
            format!(
                " 'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        })
        .collect();
    format!(
        "default-src 'self'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; \
         base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )
}

/// The bodies of the `<script>` elements without a `src` in `html`.
fn inline_scripts(html: &str) -> impl Iterator<Item = &str> {
    html.split("<script").skip(1).filter_map(|rest| {
        let (attributes, after) = rest.split_once('>')?;
        if attributes.contains("src=") {
            return None;
        }
        let (body, _) = after.split_once("</script>")?;
        Some(body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_scripts_are_found_and_external_ones_left() {
        let html = "<head><script type=\"module\" src=\"/a.js\"></script></head>\
                    <body><script>boot(1)</script><p>x</p><script nonce=\"\">\n  two\n</script></body>";
        let found: Vec<&str> = inline_scripts(html).collect();
        assert_eq!(found, ["boot(1)", "\n  two\n"]);
    }

    #[test]
    fn the_policy_hashes_the_shells_bootstrap_and_forbids_framing() {
        let dir = std::env::temp_dir().join(format!("picloud-csp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("200.html"), "<script>start()</script>").expect("shell");
        let policy = content_security_policy(&dir);
        // printf 'start()' | openssl dgst -sha256 -binary | base64
        assert!(
            policy.contains("'sha256-DIm7WJS6ZKDYe5qFLPy+h4JFI9Bol5QmYC57mt3Fb00='"),
            "{policy}"
        );
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        let scripts = policy
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .expect("a script-src");
        assert!(!scripts.contains("unsafe"), "{scripts}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An app route gets the shell; an asset that exists is cached for a year; a missing asset
    /// or a missing file such as `/favicon.ico` is a 404 that no cache keeps.
    #[tokio::test]
    async fn missing_files_are_404s_that_are_not_cached() {
        let dir = std::env::temp_dir().join(format!("picloud-assets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("_app/immutable")).expect("dir");
        std::fs::write(dir.join("200.html"), "<p>shell</p>").expect("shell");
        std::fs::write(dir.join("_app/immutable/a.js"), "a()").expect("asset");
        let app = router(Some(&dir));
        let get = |path: &'static str| {
            let app = app.clone();
            async move {
                let request = Request::builder()
                    .uri(path)
                    .body(axum::body::Body::empty())
                    .expect("request");
                let response = app.oneshot(request).await.expect("infallible");
                let status = response.status().as_u16();
                let cache = response
                    .headers()
                    .get(header::CACHE_CONTROL)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("body");
                (status, cache, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let (status, cache, body) = get("/_app/immutable/a.js").await;
        assert_eq!(
            (status, cache.as_str(), body.as_str()),
            (200, "public, max-age=31536000, immutable", "a()")
        );
        let (status, cache, body) = get("/tenants/acme").await;
        assert_eq!(
            (status, cache.as_str(), body.as_str()),
            (200, "no-cache", "<p>shell</p>")
        );
        for missing in ["/_app/immutable/gone.js", "/favicon.ico", "/robots.txt"] {
            let (status, cache, body) = get(missing).await;
            assert_eq!(status, 404, "{missing}");
            assert!(
                cache == "no-store" || cache == "no-cache",
                "{missing}: {cache}"
            );
            assert!(!body.contains("shell"), "{missing}: {body}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
