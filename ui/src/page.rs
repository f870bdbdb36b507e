//! The web tile page, embedded in the binary (no CDN, no build step): one HTML page,
//! its script and its style sheet (and an edge's first-run setup page, [`crate::setup`]). The page reads the API and its live events.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::App;

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");
/// An edge's first-run setup page ([`crate::setup`]) and its script.
pub(crate) const SETUP: &str = include_str!("page/setup.html");
const SETUP_SCRIPT: &str = include_str!("page/setup.js");

/// What the page may load and run: its own script and style sheet only (no inline script,
/// nothing from elsewhere), its node's API and files, previews drawn as data URLs; and
/// no site may frame it.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

/// `/` (the page) and its files.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { document(INDEX) }))
        .merge(assets())
}

/// An HTML page of this node, with the [`POLICY`].
pub(crate) fn document(html: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
}

/// The pages' scripts and style sheet: `/ui/app.js`, `/ui/setup.js`, `/ui/style.css`.
pub(crate) fn assets<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let script = |text: &'static str| {
        get(move || async move {
            (
                [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                text,
            )
        })
    };
    Router::new()
        .route("/ui/app.js", script(SCRIPT))
        .route("/ui/setup.js", script(SETUP_SCRIPT))
        .route(
            "/ui/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
}
