//! `/api/v1/enrollments` (HQ): make, list and revoke the codes edges join the fleet with
//! (`protocol::edges::enrollment`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::edges::Edges;
use protocol::edges::enrollment::{CodeStatus, MAX_LIFETIME, MAX_USES};
use protocol::entry::NodeName;
use serde::{Deserialize, Serialize};

use crate::App;
use crate::error::ApiError;
use crate::views::millis;

/// A code's lifetime unless asked otherwise.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A code as the API shows it (its secret never, except once, when made).
#[derive(Debug, Serialize)]
pub struct CodeView {
    /// Which code.
    pub id: String,
    /// The code itself: only in the answer that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `active`, `used`, `expired` or `revoked`.
    pub state: &'static str,
    /// Edges it may enroll in all.
    pub uses: u32,
    /// The names it is for (empty: any name HQ does not know yet).
    pub names: Vec<String>,
    /// When it was made.
    pub created_ms: u64,
    /// When it expires.
    pub expires_ms: u64,
    /// When an operator revoked it.
    pub revoked_ms: Option<u64>,
    /// The edges it enrolled.
    pub enrolled: Vec<EnrolledView>,
}

/// One edge a code enrolled.
#[derive(Debug, Serialize)]
pub struct EnrolledView {
    /// The edge.
    pub name: String,
    /// When.
    pub at_ms: u64,
    /// Its certificate's serial.
    pub serial: String,
}

impl CodeView {
    fn of(status: &CodeStatus, code: Option<String>) -> CodeView {
        CodeView {
            id: status.id.clone(),
            code,
            state: status.state,
            uses: status.uses,
            names: status.names.clone(),
            created_ms: millis(status.created),
            expires_ms: millis(status.expires),
            revoked_ms: status.revoked.map(millis),
            enrolled: status
                .enrolled
                .iter()
                .map(|(name, at, serial)| EnrolledView {
                    name: name.clone(),
                    at_ms: millis(*at),
                    serial: serial.clone(),
                })
                .collect(),
        }
    }
}

/// The body of `POST /enrollments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Create {
    uses: Option<u32>,
    expires_in_s: Option<u64>,
    names: Option<Vec<String>>,
}

fn edges(app: &App) -> Result<&Edges, ApiError> {
    app.edges.as_ref().ok_or_else(|| {
        ApiError::conflict("enrollment codes are HQ's: this node is an edge (`edge-node enroll`)")
    })
}

pub(crate) async fn create(
    State(app): State<Arc<App>>,
    body: Result<Json<Create>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(create) = body?;
    let edges = edges(&app)?;
    let uses = create.uses.unwrap_or(1);
    if !(1..=MAX_USES).contains(&uses) {
        return Err(ApiError::bad_request(format!(
            "uses {uses} is not 1 to {MAX_USES}"
        )));
    }
    let lifetime = match create.expires_in_s {
        Some(s) if s < 60 || s > MAX_LIFETIME.as_secs() => {
            return Err(ApiError::bad_request(format!(
                "expires_in_s {s} is not 60 to {} (30 days)",
                MAX_LIFETIME.as_secs()
            )));
        }
        Some(s) => Duration::from_secs(s),
        None => DEFAULT_LIFETIME,
    };
    let names = create.names.unwrap_or_default();
    if names.len() > MAX_USES as usize {
        return Err(ApiError::bad_request("more names than a code has uses"));
    }
    let names = names
        .iter()
        .map(|n| {
            NodeName::new(n)
                .map_err(|e| ApiError::bad_request(format!("{n:?} is not an edge name: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (code, status) = edges
        .create_code(uses, lifetime, names)
        .await
        .map_err(crate::api::edges_error)?;
    Ok((
        StatusCode::CREATED,
        Json(CodeView::of(&status, Some(code.to_string()))),
    )
        .into_response())
}

pub(crate) async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<CodeView>>, ApiError> {
    let codes = edges(&app)?.codes().map_err(crate::api::edges_error)?;
    Ok(Json(codes.iter().map(|c| CodeView::of(c, None)).collect()))
}

pub(crate) async fn revoke(
    State(app): State<Arc<App>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<CodeView>, ApiError> {
    let Path(id) = id?;
    let status = edges(&app)?
        .revoke_code(&id)
        .await
        .map_err(crate::api::edges_error)?;
    Ok(Json(CodeView::of(&status, None)))
}
