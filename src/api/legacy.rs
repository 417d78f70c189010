//! The routes of the service camgate replaces, kept so existing front ends work unchanged:
//! `POST /play_camera`, `POST /stop_camera`, `POST /stop_all_camera`.
//!
//! They take form-encoded bodies (or JSON) and answer `{"code":200,"message":…}`, plus `flv_data` (the
//! viewer URL) for `play_camera`. Unlike the old service, `play_camera` answers as soon as the camera's
//! worker runs instead of blocking until the stream ends; the stream's health is then in the REST routes.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::gateway::config::{CameraConfig, is_host};
use crate::gateway::{GatewayError, PlayOutcome};
use crate::model::CameraId;

use super::body::JsonOrForm;
use super::error::{ApiError, ErrorBody};
use super::state::AppState;

/// `play_camera`'s request: form fields or JSON keys.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PlayRequest {
    /// The camera's id (`[A-Za-z0-9_-]{1,64}`); it names the stream `livestream<id>`.
    pub id: String,
    /// The camera's `rtsp://` URL (the old service's name for it).
    pub ip: String,
}

/// `stop_camera`'s request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StopRequest {
    /// The camera's id.
    pub id: String,
}

/// The old service's success answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyReply {
    /// Always 200 here (errors use [`ErrorBody`]).
    pub code: u16,
    /// What happened, for people.
    pub message: String,
    /// `play_camera` only: the URL viewers play the camera at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flv_data: Option<String>,
}

/// Starts a camera (or finds it running) and returns its viewer URL.
#[utoipa::path(
    post, path = "/play_camera", tag = "legacy",
    request_body(content = PlayRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Started, or already running", body = LegacyReply),
        (status = 400, description = "Bad id or URL", body = ErrorBody),
        (status = 401, description = "Token required", body = ErrorBody),
        (status = 409, description = "Still stopping", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Camera cap reached", body = ErrorBody),
    )
)]
pub async fn play_camera(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonOrForm(request): JsonOrForm<PlayRequest>,
) -> Result<Json<LegacyReply>, ApiError> {
    // The old field names are what callers see in errors.
    let rename = [("input", "ip")];
    let id: CameraId = request.id.parse().map_err(|e| ApiError::from_spec(&e, &rename))?;
    let camera = CameraConfig { input: request.ip, ..CameraConfig::default() };
    let spec = state.gateway.spec_from_request(id.clone(), &camera).map_err(|e| ApiError::from_spec(&e, &rename))?;
    let played = state.gateway.play_request(id.clone(), &camera).await.map_err(|e| match e {
        GatewayError::Spec(e) => ApiError::from_spec(&e, &rename),
        other => other.into(),
    })?;
    let message = match played.outcome {
        PlayOutcome::Started(_) => format!("camera {id} started"),
        PlayOutcome::AlreadyRunning(_) => format!("camera {id} is already running"),
    };
    // Without an RTMP output the camera is only watchable through camgate's own preview; with a viewer secret
    // the URL is signed and expires. In a cluster it is the URL of the origin of the node that took it.
    let flv_data = state.gateway.viewer_urls_for(&spec, request_host(&headers), state.settings.listen_port, None).url;
    Ok(Json(LegacyReply { code: 200, message, flv_data: Some(flv_data) }))
}

/// Stops one camera; answers once its thread has exited and its stream is closed.
#[utoipa::path(
    post, path = "/stop_camera", tag = "legacy",
    request_body(content = StopRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Stopped", body = LegacyReply),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 404, description = "No such camera", body = ErrorBody),
        (status = 504, description = "The camera did not stop in time", body = ErrorBody),
    )
)]
pub async fn stop_camera(
    State(state): State<AppState>,
    JsonOrForm(request): JsonOrForm<StopRequest>,
) -> Result<Json<LegacyReply>, ApiError> {
    let id: CameraId = request.id.parse()?;
    state.gateway.stop(&id).await?;
    Ok(Json(LegacyReply { code: 200, message: format!("camera {id} stopped"), flv_data: None }))
}

/// Stops every camera.
#[utoipa::path(
    post, path = "/stop_all_camera", tag = "legacy",
    responses(
        (status = 200, description = "All stopped", body = LegacyReply),
        (status = 504, description = "Some camera did not stop in time", body = ErrorBody),
    )
)]
pub async fn stop_all_camera(State(state): State<AppState>) -> Result<Json<LegacyReply>, ApiError> {
    let stopped = state.gateway.stop_all().await?.stopped;
    Ok(Json(LegacyReply { code: 200, message: format!("stopped {stopped} cameras"), flv_data: None }))
}

/// The host part of the request's `Host` header, if it is a plain host (a header is caller-controlled and
/// ends up in a URL handed to browsers).
pub fn request_host(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::HOST)?.to_str().ok()?;
    let host = if value.starts_with('[') {
        value.split_inclusive(']').next()?
    } else {
        value.rsplit_once(':').map_or(value, |(host, _)| host)
    };
    is_host(host).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(value: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, value.parse().unwrap());
        request_host(&headers).map(str::to_owned)
    }

    #[test]
    fn host_header_parts() {
        assert_eq!(host_of("10.0.0.2:7000").as_deref(), Some("10.0.0.2"));
        assert_eq!(host_of("gw.example.com").as_deref(), Some("gw.example.com"));
        assert_eq!(host_of("[::1]:7000").as_deref(), Some("[::1]"));
        assert_eq!(host_of("evil/path:7000"), None);
    }
}
