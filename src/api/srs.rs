//! SRS's `http_hooks`: `POST /api/v1/srs/on_play`, `on_stop`, `on_publish`, `on_unpublish`.
//!
//! SRS posts a JSON body (`action, client_id, ip, vhost, app, stream, param, stream_url, stream_id, …`) and
//! lets the client through only on HTTP 200 with `{"code":0}` (or a body of `0`). Play and stop drive the
//! on-demand cameras ([`crate::on_demand`]); the start happens in the background, so the hook is answered at
//! once and SRS holds the player until the stream is published. A play of a running always-on camera's
//! stream is accepted as it is; a play of a stream no camera publishes is refused (non-zero `code`), so SRS
//! rejects the player. Publish hooks are bookkeeping and never
//! refused: refusing would reject camgate's own stream, or any other publisher's.
//!
//! SRS cannot send an `Authorization` header, so when API tokens are configured the hook URL carries one as
//! `?token=…` (a bearer header is accepted too).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};
use utoipa::ToSchema;

use crate::on_demand::{OnDemandError, stream_key, stream_of};
use crate::spec::{CameraId, OutputTarget};

use super::auth;
use super::body::JsonBody;
use super::error::ApiError;
use super::state::AppState;

/// The fields of an SRS hook body that camgate reads; SRS sends more, which are ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct SrsHook {
    /// `on_play`, `on_stop`, `on_publish` or `on_unpublish`.
    pub action: String,
    /// SRS's id of the connection: a string in SRS 4+, a number in SRS 3.
    #[schema(value_type = String)]
    pub client_id: serde_json::Value,
    /// The client's address.
    pub ip: String,
    /// The virtual host.
    pub vhost: String,
    /// The application, `live` for `rtmp://srs/live/livestream7`.
    pub app: String,
    /// The stream, `livestream7`.
    pub stream: String,
    /// The query string of the client's URL, if any.
    pub param: String,
}

/// The answer SRS reads: `code` 0 lets the client through, anything else rejects it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HookReply {
    /// 0 to accept.
    pub code: u16,
    /// Why not, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
}

/// `?token=` on a hook URL.
#[derive(Debug, Default, Deserialize)]
pub struct HookQuery {
    token: Option<String>,
}

type HookAnswer = Result<(StatusCode, Json<HookReply>), ApiError>;

fn accepted() -> (StatusCode, Json<HookReply>) {
    (StatusCode::OK, Json(HookReply { code: 0, msg: None }))
}

/// Refused with 404 in both the status and `code`: SRS rejects on either, and people reading its log see why.
fn refused(error: impl ToString) -> (StatusCode, Json<HookReply>) {
    (StatusCode::NOT_FOUND, Json(HookReply { code: 404, msg: Some(error.to_string()) }))
}

fn client(hook: &SrsHook) -> String {
    match &hook.client_id {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => hook.ip.clone(),
        other => other.to_string(),
    }
}

fn check_token(state: &AppState, query: &HookQuery, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = query.token.as_deref().or_else(|| auth::bearer(headers));
    if auth::is_valid(&state.settings.tokens, presented) { Ok(()) } else { Err(ApiError::unauthorized()) }
}

/// A player started: counts it and starts its on-demand camera if it is the first.
#[utoipa::path(
    post, path = "/api/v1/srs/on_play", tag = "srs", request_body = SrsHook,
    params(("token" = Option<String>, Query, description = "API token, when tokens are configured")),
    responses((status = 200, body = HookReply), (status = 404, description = "Unknown stream", body = HookReply))
)]
pub async fn on_play(
    State(state): State<AppState>,
    Query(query): Query<HookQuery>,
    headers: HeaderMap,
    JsonBody(hook): JsonBody<SrsHook>,
) -> HookAnswer {
    check_token(&state, &query, &headers)?;
    let counted = state.on_demand.play(&hook.app, &hook.stream, &client(&hook));
    Ok(answer_viewer_change(&state, &hook, counted, "viewer joined"))
}

/// Whether a camera that is not on demand publishes the hook's stream: its viewers need no start or stop.
fn is_always_on_stream(state: &AppState, hook: &SrsHook) -> bool {
    let key = stream_key(&hook.app, &hook.stream);
    state.supervisor.snapshot().iter().any(|camera| {
        // The status shows the output redacted, which hides credentials but keeps the path.
        let output = camera.output.as_deref().and_then(|o| o.parse::<OutputTarget>().ok());
        output.as_ref().and_then(stream_of).is_some_and(|stream| stream == key)
    })
}

/// A player left: uncounts it and, after the last one, stops the camera once the linger time has passed.
#[utoipa::path(
    post, path = "/api/v1/srs/on_stop", tag = "srs", request_body = SrsHook,
    params(("token" = Option<String>, Query, description = "API token, when tokens are configured")),
    responses((status = 200, body = HookReply), (status = 404, description = "Unknown stream", body = HookReply))
)]
pub async fn on_stop(
    State(state): State<AppState>,
    Query(query): Query<HookQuery>,
    headers: HeaderMap,
    JsonBody(hook): JsonBody<SrsHook>,
) -> HookAnswer {
    check_token(&state, &query, &headers)?;
    let counted = state.on_demand.stop(&hook.app, &hook.stream, &client(&hook));
    Ok(answer_viewer_change(&state, &hook, counted, "viewer left"))
}

/// SRS's answer to a player joining or leaving: accepted for on-demand cameras (already counted) and for the
/// streams of always-on cameras (nothing to count), refused for streams no camera publishes.
fn answer_viewer_change(
    state: &AppState,
    hook: &SrsHook,
    counted: Result<CameraId, OnDemandError>,
    what: &str,
) -> (StatusCode, Json<HookReply>) {
    match counted {
        Ok(id) => {
            info!(camera = %id, client = %client(hook), ip = %hook.ip, "{what}");
            accepted()
        }
        Err(_) if is_always_on_stream(state, hook) => accepted(),
        Err(error) => {
            info!(app = %hook.app, stream = %hook.stream, ip = %hook.ip, "{what}, refused: {error}");
            refused(error)
        }
    }
}

/// A stream was published; recorded for on-demand cameras, accepted for everyone.
#[utoipa::path(
    post, path = "/api/v1/srs/on_publish", tag = "srs", request_body = SrsHook,
    params(("token" = Option<String>, Query, description = "API token, when tokens are configured")),
    responses((status = 200, body = HookReply))
)]
pub async fn on_publish(
    State(state): State<AppState>,
    Query(query): Query<HookQuery>,
    headers: HeaderMap,
    JsonBody(hook): JsonBody<SrsHook>,
) -> HookAnswer {
    record_publishing(&state, &query, &headers, &hook, true)
}

/// A stream was unpublished; recorded, always accepted.
#[utoipa::path(
    post, path = "/api/v1/srs/on_unpublish", tag = "srs", request_body = SrsHook,
    params(("token" = Option<String>, Query, description = "API token, when tokens are configured")),
    responses((status = 200, body = HookReply))
)]
pub async fn on_unpublish(
    State(state): State<AppState>,
    Query(query): Query<HookQuery>,
    headers: HeaderMap,
    JsonBody(hook): JsonBody<SrsHook>,
) -> HookAnswer {
    record_publishing(&state, &query, &headers, &hook, false)
}

/// Notes a stream's publishing state for on-demand bookkeeping; publishes are never refused, since that would
/// reject camgate's own stream.
fn record_publishing(
    state: &AppState,
    query: &HookQuery,
    headers: &HeaderMap,
    hook: &SrsHook,
    published: bool,
) -> HookAnswer {
    check_token(state, query, headers)?;
    if let Ok(id) = state.on_demand.published(&hook.app, &hook.stream, published) {
        debug!(camera = %id, published, "stream publishing changed");
    }
    Ok(accepted())
}
