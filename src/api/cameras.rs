//! The REST routes: list, inspect, start or replace, and stop cameras under `/api/v1/cameras`.
//!
//! Answers carry each camera's live [`CameraStatus`] (state, rates, totals, codecs, last error), which the
//! supervisor refreshes once a second; reading it never waits on a camera. Every change goes through the
//! [`Gateway`](crate::Gateway), which applies it whole, in order with every other change to that camera.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::gateway::OnDemandCamera;
use crate::gateway::config::CameraConfig;
use crate::gateway::{GatewayError, PutOutcome, RemoveOutcome, StoppedAll};
use crate::model::CameraId;
use crate::runtime::CameraStatus;

use super::body::JsonBody;
use super::error::{ApiError, ErrorBody};
use super::state::AppState;

/// The `{id}` path segment, parsed and checked.
pub struct CameraIdPath(pub CameraId);

impl<S: Send + Sync> FromRequestParts<S> for CameraIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(CameraIdPath(id.parse()?))
    }
}

/// Every known camera with its state and stats.
#[utoipa::path(
    get, path = "/api/v1/cameras", tag = "cameras",
    responses((status = 200, description = "All cameras", body = [CameraStatus]))
)]
pub async fn list(State(state): State<AppState>) -> Json<Vec<CameraStatus>> {
    Json(state.gateway.cameras().await)
}

/// One camera's state and stats.
#[utoipa::path(
    get, path = "/api/v1/cameras/{id}", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    responses(
        (status = 200, description = "The camera", body = CameraStatus),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 404, description = "No such camera", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    CameraIdPath(id): CameraIdPath,
) -> Result<Json<CameraStatus>, ApiError> {
    state.gateway.camera(&id).await.map(Json).ok_or_else(|| GatewayError::NotFound(id).into())
}

/// Starts a camera, or replaces a running one with the new spec (stop, then start). With `"on_demand": true`
/// the camera is only registered: it starts when the RTMP server's `on_play` hook reports its first viewer.
/// With a data directory configured, the camera is saved and runs (or is registered) again after a restart.
///
/// The spec is checked in full before anything running is touched; a bad request leaves the camera as it
/// was.
#[utoipa::path(
    put, path = "/api/v1/cameras/{id}", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    request_body = CameraConfig,
    responses(
        (status = 201, description = "Started", body = CameraStatus),
        (status = 200, description = "Replaced", body = CameraStatus),
        (status = 202, description = "Registered on demand", body = OnDemandCamera),
        (status = 400, description = "Invalid id or spec; `field` names it", body = ErrorBody),
        (status = 409, description = "Still stopping", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "A limit was reached; `limit` names it", body = ErrorBody),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    CameraIdPath(id): CameraIdPath,
    JsonBody(camera): JsonBody<CameraConfig>,
) -> Result<Response, ApiError> {
    let applied = state.gateway.put_request(id, &camera).await?;
    let revision = revision_header(applied.revision);
    Ok(match applied.outcome {
        PutOutcome::Started(status) => (StatusCode::CREATED, revision, Json(status)).into_response(),
        PutOutcome::Replaced(status) => (StatusCode::OK, revision, Json(status)).into_response(),
        PutOutcome::Registered(camera) => (StatusCode::ACCEPTED, revision, Json(camera)).into_response(),
    })
}

/// Every camera registered on demand, running or not, with its viewers.
#[utoipa::path(
    get, path = "/api/v1/on_demand", tag = "cameras",
    responses((status = 200, description = "On-demand cameras", body = [OnDemandCamera]))
)]
pub async fn list_on_demand(State(state): State<AppState>) -> Json<Vec<OnDemandCamera>> {
    Json(state.gateway.on_demand())
}

/// Stops one camera (and unregisters it if it was on demand, and drops it from the saved state); answers with
/// its final status once its thread has exited.
#[utoipa::path(
    delete, path = "/api/v1/cameras/{id}", tag = "cameras",
    params(("id" = String, Path, description = "Camera id")),
    responses(
        (status = 200, description = "Stopped; the final status", body = CameraStatus),
        (status = 204, description = "It was registered or saved but not running; now it is neither"),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 404, description = "No such camera", body = ErrorBody),
        (status = 504, description = "The camera did not stop in time", body = ErrorBody),
    )
)]
pub async fn delete(State(state): State<AppState>, CameraIdPath(id): CameraIdPath) -> Result<Response, ApiError> {
    let applied = state.gateway.remove(&id).await?;
    let revision = revision_header(applied.revision);
    Ok(match applied.outcome {
        RemoveOutcome::Stopped(status) => (revision, Json(*status)).into_response(),
        RemoveOutcome::Forgotten => (StatusCode::NO_CONTENT, revision).into_response(),
    })
}

/// Stops every camera (on-demand ones stay registered for their next viewer).
#[utoipa::path(
    delete, path = "/api/v1/cameras", tag = "cameras",
    responses(
        (status = 200, description = "All stopped", body = StoppedAll),
        (status = 504, description = "Some camera did not stop in time", body = ErrorBody),
    )
)]
pub async fn delete_all(State(state): State<AppState>) -> Result<Json<StoppedAll>, ApiError> {
    Ok(Json(state.gateway.stop_all().await?))
}

/// The header that carries the revision of the desired set a change produced ([`REVISION_HEADER`]): changes
/// to one camera apply in revision order, so a client that raced others can tell which write is the last.
fn revision_header(revision: u64) -> [(&'static str, String); 1] {
    [(REVISION_HEADER, revision.to_string())]
}

/// `X-Camgate-Revision`: on `PUT` and `DELETE` answers, the desired set's revision after the change (in a
/// cluster, etcd's revision).
pub const REVISION_HEADER: &str = "x-camgate-revision";
