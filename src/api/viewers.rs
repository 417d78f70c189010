//! `GET /api/v1/cameras/{id}/viewer_url?ttl=<seconds>`: where a camera can be watched, for operators to hand
//! out. With a viewer secret configured the URLs are signed and expire (see
//! [`crate::gateway::viewer_urls`]); without one they are the plain URLs and never expire.

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::cameras::CameraIdPath;
use super::error::{ApiError, ErrorBody};
use super::legacy::request_host;
use super::state::AppState;
use crate::gateway::ViewerUrls;
use crate::gateway::viewer_urls::MAX_TTL;

/// The query of the viewer URL route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ViewerUrlQuery {
    /// How long the URL stays valid, in seconds (1 to 604800); default: `viewer_url_ttl_ms`.
    pub ttl: Option<u64>,
}

/// Viewer URLs of one camera (registered, running or failed), signed when a viewer secret is configured.
#[utoipa::path(
    get, path = "/api/v1/cameras/{id}/viewer_url", tag = "cameras",
    params(("id" = String, Path, description = "Camera id"), ViewerUrlQuery),
    responses(
        (status = 200, description = "The camera's viewer URLs", body = ViewerUrls),
        (status = 400, description = "Invalid id or ttl", body = ErrorBody),
        (status = 404, description = "No such camera", body = ErrorBody),
    )
)]
pub async fn viewer_url(
    State(state): State<AppState>,
    CameraIdPath(id): CameraIdPath,
    Query(query): Query<ViewerUrlQuery>,
    headers: HeaderMap,
) -> Result<Json<ViewerUrls>, ApiError> {
    let ttl = match query.ttl {
        Some(secs) if secs == 0 || secs > MAX_TTL.as_secs() => {
            return Err(ApiError::bad_field("ttl", format!("must be 1 to {} seconds", MAX_TTL.as_secs())));
        }
        other => other.map(Duration::from_secs),
    };
    let urls = state.gateway.viewer_urls(&id, request_host(&headers), state.settings.listen_port, ttl)?;
    Ok(Json(urls))
}
