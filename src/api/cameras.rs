//! The REST routes: list, inspect, start or replace, and stop cameras under `/api/v1/cameras`.
//!
//! Answers carry each camera's live [`CameraStatus`] (state, rates, totals, codecs, last error), which the
//! supervisor refreshes once a second; reading it never waits on a camera.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::{CameraConfig, Origin};
use crate::on_demand::OnDemandCamera;
use crate::spec::{CameraId, StreamSpec};
use crate::stats::CameraStatus;
use crate::supervisor::StartOutcome;

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

/// What `DELETE /api/v1/cameras` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoppedAll {
    /// How many cameras were stopped.
    pub stopped: usize,
    /// Their final statuses.
    pub cameras: Vec<CameraStatus>,
}

/// Every known camera with its state and stats.
#[utoipa::path(
    get, path = "/api/v1/cameras", tag = "cameras",
    responses((status = 200, description = "All cameras", body = [CameraStatus]))
)]
pub async fn list(State(state): State<AppState>) -> Json<Vec<CameraStatus>> {
    Json(state.supervisor.snapshot())
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
    state.supervisor.status(&id).map(Json).ok_or_else(|| crate::SupervisorError::NotFound(id).into())
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
        (status = 429, description = "Camera cap reached", body = ErrorBody),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    CameraIdPath(id): CameraIdPath,
    JsonBody(camera): JsonBody<CameraConfig>,
) -> Result<Response, ApiError> {
    let settings = &state.settings;
    let spec = camera.to_spec(id.clone(), &settings.defaults, &settings.templates, Origin::Api)?;
    if camera.on_demand {
        return register_on_demand(&state, spec).await;
    }
    // Asked to run all the time: no longer up to the viewers.
    state.on_demand.unregister(&id);
    let saved = spec.clone();
    let replaced = match state.supervisor.status(&id) {
        Some(existing) if existing.state.is_live() => {
            state.supervisor.stop(&id).await?;
            true
        }
        _ => false,
    };
    let outcome = state.supervisor.start(spec).await?;
    let status = if replaced { StatusCode::OK } else { StatusCode::CREATED };
    let camera = match outcome {
        StartOutcome::Started(camera) => camera,
        // Someone started it between our stop and our start: theirs wins, and the caller hears so.
        StartOutcome::AlreadyRunning(_) => {
            return Err(ApiError::new(StatusCode::CONFLICT, format!("camera {id} was started by another request"))
                .with_field("id"));
        }
    };
    state.remember(&saved, false)?;
    Ok((status, Json(camera)).into_response())
}

/// `PUT` with `"on_demand": true`: a running camera is stopped (the new spec applies from the next viewer on,
/// at once if there are viewers already) and the camera is registered.
async fn register_on_demand(state: &AppState, spec: StreamSpec) -> Result<Response, ApiError> {
    if state.supervisor.status(&spec.id).is_some_and(|s| s.state.is_live()) {
        state.supervisor.stop(&spec.id).await?;
    }
    let registered =
        state.on_demand.register(spec.clone()).map_err(|e| ApiError::bad_field("on_demand", e.to_string()))?;
    state.remember(&spec, true)?;
    Ok((StatusCode::ACCEPTED, Json(registered)).into_response())
}

/// Every camera registered on demand, running or not, with its viewers.
#[utoipa::path(
    get, path = "/api/v1/on_demand", tag = "cameras",
    responses((status = 200, description = "On-demand cameras", body = [OnDemandCamera]))
)]
pub async fn list_on_demand(State(state): State<AppState>) -> Json<Vec<OnDemandCamera>> {
    Json(state.on_demand.list())
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
    let was_on_demand = state.on_demand.unregister(&id);
    let was_saved = state.forget(&id)?;
    match state.supervisor.stop(&id).await {
        Ok(status) => Ok(Json(status).into_response()),
        Err(crate::SupervisorError::NotFound(_)) if was_on_demand || was_saved => {
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(error) => Err(error.into()),
    }
}

/// Stops every camera.
#[utoipa::path(
    delete, path = "/api/v1/cameras", tag = "cameras",
    responses(
        (status = 200, description = "All stopped", body = StoppedAll),
        (status = 504, description = "Some camera did not stop in time", body = ErrorBody),
    )
)]
pub async fn delete_all(State(state): State<AppState>) -> Result<Json<StoppedAll>, ApiError> {
    let mut cameras = Vec::new();
    for result in state.supervisor.stop_all().await {
        match result {
            Ok(camera) => cameras.push(camera),
            // Removed by another request meanwhile: stopped all the same.
            Err(crate::SupervisorError::NotFound(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    state.forget_stopped(cameras.iter().map(|c| c.id.clone()))?;
    Ok(Json(StoppedAll { stopped: cameras.len(), cameras }))
}
