//! An edge's first-run setup: an edge that holds no certificate yet serves, on its HTTP
//! address, a page that asks its operator for HQ's address and an enrollment code
//! (`core-node enroll create`), enrolls with them
//! ([`protocol::edges::enrollment::enroll_first_run`]: the key is made here and never
//! leaves), and then hands its listener back so that the node itself serves on it.
//!
//! The same rules as the node's server hold ([`crate::access`]): the `Host` and browser
//! checks, and the token when `http.token` is set (sign in on the page). One enrollment
//! runs at a time. `/readyz` answers 503 until the edge has enrolled.
//!
//! IO: the TCP listener; the enrollment's QUIC exchange and files.

use std::future::{Future, IntoFuture as _};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use protocol::config::{Config, FirstRun};
use protocol::edges::enrollment::{self, Code, EnrollError, FirstRunError};
use protocol::entry::NodeName;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};

use crate::access::{self, Gate};
use crate::error::ApiError;
use crate::{Listener, page};

/// How long the setup's open requests may take to finish once an enrollment succeeded.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The largest body the setup takes: four short fields.
const BODY_LIMIT: usize = 4 << 10;

/// What the handlers share.
struct Setup {
    gate: Arc<Gate>,
    certs_dir: PathBuf,
    /// The config's answers, which the page offers to start from.
    offered: FirstRun,
    /// Held while an enrollment runs.
    enrolling: Arc<Mutex<()>>,
    /// The answers of the enrollment that succeeded.
    done: watch::Sender<Option<FirstRun>>,
}

/// Serves the first-run setup for `config`'s edge on `listener` until an enrollment
/// succeeds: then returns the listener (still bound: a browser's next request waits for
/// the node) and the operator's answers. Returns `None` if `shutdown` resolves first.
pub async fn serve(
    config: &Config,
    listener: Listener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<Option<(Listener, FirstRun)>> {
    // The server gets a copy of the socket; this one stays bound for the node.
    let kept = listener.0.into_std()?;
    let served = TcpListener::from_std(kept.try_clone()?)?;
    let (done, mut enrolled) = watch::channel(None);
    let setup = Arc::new(Setup {
        gate: Gate::new(config, BODY_LIMIT),
        certs_dir: config.certs_dir(),
        offered: FirstRun {
            name: config.node.name.clone(),
            core: config.link.core.clone(),
            core_name: config.link.core_name.clone(),
        },
        enrolling: Arc::new(Mutex::new(())),
        done,
    });
    let (stop, mut stopping) = watch::channel(false);
    let server = axum::serve(
        served,
        router(setup).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    let mut server = std::pin::pin!(server.into_future());
    let enrolled_now = tokio::select! {
        ended = &mut server => {
            ended?;
            return Ok(None);
        }
        () = shutdown => false,
        Ok(_) = enrolled.wait_for(Option::is_some) => true,
    };
    // Open requests (the enrolling one's answer) are answered before the server ends;
    // a client that holds a request open cannot hold the node back for longer.
    stop.send_replace(true);
    if let Ok(ended) = tokio::time::timeout(CLOSE_WAIT, server).await {
        ended?;
    }
    let answers = enrolled.borrow().clone();
    match answers {
        Some(answers) if enrolled_now => {
            Ok(Some((Listener(TcpListener::from_std(kept)?), answers)))
        }
        _ => Ok(None),
    }
}

fn router(setup: Arc<Setup>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not enrolled yet: the first-run setup is on this address's page\n",
                )
            }),
        )
        .route("/", get(|| async { page::document(page::SETUP) }))
        .merge(page::assets())
        .nest(
            "/api/v1",
            Router::new()
                .route("/setup", get(offered).post(enroll))
                .merge(access::routes(setup.gate.clone())),
        )
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            setup.gate.clone(),
            access::guard,
        ))
        .with_state(setup)
}

/// `GET /api/v1/setup`: what the page starts from.
#[derive(Debug, Serialize)]
struct Offered {
    /// Always `setup`: the page tells this server from the node's.
    state: &'static str,
    name: String,
    core: String,
    core_name: String,
    /// Where the key and certificate will be.
    certs_dir: String,
}

async fn offered(State(setup): State<Arc<Setup>>) -> Json<Offered> {
    let offered = &setup.offered;
    Json(Offered {
        state: "setup",
        name: offered.name.to_string(),
        core: offered.core.clone(),
        core_name: offered.core_name.to_string(),
        certs_dir: setup.certs_dir.display().to_string(),
    })
}

/// `POST /api/v1/setup`: the operator's answers and the code.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answers {
    name: String,
    core: String,
    core_name: String,
    code: String,
}

/// What an enrollment gave.
#[derive(Debug, Serialize)]
struct Enrolled {
    name: String,
    core: String,
    serial: String,
    /// The certificate's end, in milliseconds since the Unix epoch.
    not_after_ms: u64,
}

async fn enroll(
    State(setup): State<Arc<Setup>>,
    body: Result<Json<Answers>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(answers) = body?;
    let name = |field: &str, text: String| {
        NodeName::new(text.trim().to_owned())
            .map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
    };
    let first_run = FirstRun {
        name: name("this edge's name", answers.name)?,
        core: answers.core.trim().to_owned(),
        core_name: name("HQ's name", answers.core_name)?,
    };
    first_run.check().map_err(ApiError::bad_request)?;
    let code: Code = answers
        .code
        .parse()
        .map_err(|e: String| ApiError::bad_request(format!("the code: {e}")))?;
    let Ok(one) = setup.enrolling.clone().try_lock_owned() else {
        return Err(ApiError::conflict(
            "an enrollment is under way already; wait for its answer",
        ));
    };
    if setup.done.borrow().is_some() {
        return Err(ApiError::conflict("this edge has enrolled already"));
    }
    tracing::info!(name = %first_run.name, core = %first_run.core, code = %code.id, "first-run setup: enrolling");
    // In a task of its own: a browser that goes away does not cut the exchange (or the
    // removal of a failed one's record) short.
    let task = {
        let (certs_dir, first_run) = (setup.certs_dir.clone(), first_run.clone());
        tokio::spawn(async move {
            let enrolled = enrollment::enroll_first_run(&certs_dir, &first_run, &code).await;
            drop(one);
            enrolled
        })
    };
    let identity = task
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| {
            tracing::warn!(error = %e, "first-run setup: the enrollment failed");
            refusal(&e)
        })?;
    let info = identity
        .certificate_info()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    tracing::info!(name = %first_run.name, core = %first_run.core, serial = %info.serial, "first-run setup: enrolled; the edge starts");
    let enrolled = Enrolled {
        name: first_run.name.to_string(),
        core: first_run.core.clone(),
        serial: info.serial.to_string(),
        not_after_ms: crate::views::millis(info.not_after),
    };
    setup.done.send_replace(Some(first_run));
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(enrolled)).into_response())
}

/// The answer to a failed enrollment: the reason, with a status that says whose it is.
fn refusal(error: &FirstRunError) -> ApiError {
    let message = error.to_string();
    match error {
        FirstRunError::Answers(_) => ApiError::bad_request(message),
        FirstRunError::Enroll(EnrollError::Refused(_)) => {
            ApiError::new(StatusCode::FORBIDDEN, "refused", message)
        }
        FirstRunError::Enroll(EnrollError::Unreachable { .. }) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "unreachable", message)
        }
        FirstRunError::Enroll(EnrollError::Files(_)) => ApiError::conflict(message),
        FirstRunError::Record { .. } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
        }
    }
}
