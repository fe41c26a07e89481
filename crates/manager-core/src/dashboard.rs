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
    let immutable = tower::ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ))
        .service(ServeDir::new(dir.join("_app/immutable")));
    let rest = tower::ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        .service(ServeDir::new(dir).fallback(ServeFile::new(dir.join("200.html"))));
    Router::new()
        .nest_service("/_app/immutable", immutable)
        .route_service("/_app/{*rest}", ServeDir::new(dir.join("_app")))
        .fallback_service(rest)
}
