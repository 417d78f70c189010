//! The built-in preview over HTTP: `GET /live/{id}.flv` streams a camera's FLV (HTTP-FLV, chunked) to any
//! number of viewers, and `GET /api/v1/cameras/{id}/snapshot.jpg` answers a still of its latest picture.
//! In a cluster both redirect (307) to the node that runs the camera, query included (a signed viewer URL
//! stays valid: every node has the same viewer secret).

use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::stream;
use serde::Deserialize;

use super::auth;
use super::error::ApiError;
use super::state::AppState;
use crate::model::CameraId;

/// Plays a camera's preview: FLV header, metadata and codec headers, the current GOP from its keyframe, then
/// live. A viewer that cannot keep up is disconnected (the player reconnects) instead of buffered without bound.
#[utoipa::path(
    get, path = "/live/{stream}", tag = "preview",
    params(
        ("stream" = String, Path, description = "`<camera id>.flv`"),
        ("expires" = Option<u64>, Query, description = "A signed viewer URL's expiry (Unix seconds)"),
        ("signature" = Option<String>, Query, description = "A signed viewer URL's signature"),
    ),
    responses(
        (status = 200, description = "HTTP-FLV stream", content_type = "video/x-flv"),
        (status = 307, description = "In a cluster: the camera runs on another node, at `Location`"),
        (status = 401, description = "A token or a signed viewer URL is needed", body = super::error::ErrorBody),
        (status = 403, description = "The viewer URL's signature is invalid or expired", body = super::error::ErrorBody),
        (status = 404, description = "No such camera, or its preview is off", body = super::error::ErrorBody),
        (status = 429, description = "Too many preview viewers; `limit` names the limit", body = super::error::ErrorBody),
    )
)]
pub async fn live_flv(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id: CameraId = stream
        .strip_suffix(".flv")
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "stream names end in .flv"))?
        .parse()
        .map_err(ApiError::from)?;
    auth::authorize_watch(&state, &headers, query.as_deref(), &id)?;
    if let Some(redirect) = to_owner(&state, &id, &format!("/live/{stream}"), query.as_deref()) {
        return Ok(redirect);
    }
    let viewer = state.gateway.preview_viewer(&id)?;
    // The stream ends with the camera, or when the gateway begins shutting down: an open player must not hold
    // up the graceful drain.
    let shutdown = state.gateway.shutdown_signal();
    let body = stream::unfold((viewer, shutdown), |(mut viewer, mut shutdown)| async move {
        let chunk = tokio::select! {
            chunk = viewer.recv() => chunk?,
            _ = shutdown.wait_for(|down| *down) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(chunk), (viewer, shutdown)))
    });
    Ok((
        [(header::CONTENT_TYPE, "video/x-flv"), (header::CACHE_CONTROL, "no-cache, no-store")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Query of the snapshot route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SnapshotQuery {
    /// Scale the picture down to at most this width.
    pub width: Option<u32>,
}

/// A JPEG of the camera's latest picture, decoded on request from its last keyframe (also in copy mode).
#[utoipa::path(
    get, path = "/api/v1/cameras/{id}/snapshot.jpg", tag = "cameras",
    params(
        ("id" = String, Path, description = "Camera id"),
        SnapshotQuery,
        ("expires" = Option<u64>, Query, description = "A signed viewer URL's expiry (Unix seconds)"),
        ("signature" = Option<String>, Query, description = "A signed viewer URL's signature"),
    ),
    responses(
        (status = 200, description = "JPEG", content_type = "image/jpeg"),
        (status = 307, description = "In a cluster: the camera runs on another node, at `Location`"),
        (status = 404, description = "No such camera", body = super::error::ErrorBody),
        (status = 429, description = "Too many snapshots at once (`limits.snapshot_decodes`)", body = super::error::ErrorBody),
        (status = 503, description = "No picture yet", body = super::error::ErrorBody),
    )
)]
pub async fn snapshot(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<SnapshotQuery>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id: CameraId = id.parse()?;
    auth::authorize_watch(&state, &headers, raw.as_deref(), &id)?;
    if let Some(redirect) = to_owner(&state, &id, &format!("/api/v1/cameras/{id}/snapshot.jpg"), raw.as_deref()) {
        return Ok(redirect);
    }
    let jpeg = state.gateway.snapshot(&id, query.width).await?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-cache")], jpeg).into_response())
}

/// In a cluster, a redirect to the node that runs camera `id`, if that is another node.
fn to_owner(state: &AppState, id: &CameraId, path: &str, query: Option<&str>) -> Option<Response> {
    let url = state.gateway.cluster()?.remote_owner(id)?;
    let location = match query {
        Some(query) if !query.is_empty() => format!("{url}{path}?{query}"),
        _ => format!("{url}{path}"),
    };
    Some(Redirect::temporary(&location).into_response())
}
