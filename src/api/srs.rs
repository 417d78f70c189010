//! SRS's `http_hooks`: `POST /api/v1/srs/on_play`, `on_stop`, `on_publish`, `on_unpublish`.
//!
//! SRS posts a JSON body (`action, client_id, ip, vhost, app, stream, param, stream_url, stream_id, …`) and
//! lets the client through only on HTTP 200 with `{"code":0}` (or a body of `0`). Play and stop count the
//! stream's viewers in the [`Gateway`](crate::Gateway), which starts on-demand cameras for their first viewer
//! and stops them a linger time after their last. The hook is answered at once — the camera starts in the
//! background and SRS holds the player until the stream is published. A play of a stream no camera publishes
//! is refused (non-zero `code`), so SRS rejects the player. Publish hooks are bookkeeping and never refused:
//! refusing would reject camgate's own stream, or any other publisher's.
//!
//! SRS cannot send an `Authorization` header, so when API tokens are configured the hook URL carries one as
//! `?token=…` (a bearer header is accepted too). With a viewer secret configured, `on_play` also checks the
//! player's signed viewer URL (SRS passes its query as `param`), so SRS's own HTTP-FLV, HLS and WebRTC viewers
//! need one too.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};
use utoipa::ToSchema;

use crate::gateway::GatewayError;
use crate::gateway::OnDemandError;

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

/// Refused with the same status in the HTTP answer and in `code` (404 for an unknown stream, 429 for too many
/// viewers): SRS rejects on either, and people reading its log see why.
fn refused(error: OnDemandError) -> (StatusCode, Json<HookReply>) {
    let status = match error {
        OnDemandError::TooManyViewers { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::NOT_FOUND,
    };
    (status, Json(HookReply { code: status.as_u16(), msg: Some(error.to_string()) }))
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

/// A player started: counts it and starts its on-demand camera if it is the first. Answered at once; the
/// camera starts in the background and SRS holds the player until the stream is published.
#[utoipa::path(
    post, path = "/api/v1/srs/on_play", tag = "srs", request_body = SrsHook,
    params(("token" = Option<String>, Query, description = "API token, when tokens are configured")),
    responses(
        (status = 200, body = HookReply),
        (status = 403, description = "A viewer secret is configured and the player's URL is not validly signed", body = HookReply),
        (status = 404, description = "Unknown stream", body = HookReply),
        (status = 429, description = "Too many viewers", body = HookReply),
    )
)]
pub async fn on_play(
    State(state): State<AppState>,
    Query(query): Query<HookQuery>,
    headers: HeaderMap,
    JsonBody(hook): JsonBody<SrsHook>,
) -> HookAnswer {
    check_token(&state, &query, &headers)?;
    let client = client(&hook);
    // With a viewer secret, SRS's players need a signed viewer URL of this camera: SRS passes the player's
    // query as `param`.
    if state.gateway.signs_viewer_urls()
        && let Ok(id) = state.gateway.knows_stream(&hook.app, &hook.stream)
        && let Err(error) = state.gateway.check_viewer_signature(&id, &hook.param)
    {
        info!(camera = %id, client = %client, ip = %hook.ip, "viewer refused: {error}");
        let status = StatusCode::FORBIDDEN;
        return Ok((
            status,
            Json(HookReply { code: status.as_u16(), msg: Some(format!("viewer URL refused: {error}")) }),
        ));
    }
    match state.gateway.viewer_joined(&hook.app, &hook.stream, &client) {
        Ok(joined) => {
            let change = joined.applied.outcome;
            info!(camera = %change.id, client = %client, ip = %hook.ip, viewers = change.viewers, "viewer joined");
            Ok(accepted())
        }
        Err(GatewayError::OnDemand(error)) => {
            info!(app = %hook.app, stream = %hook.stream, ip = %hook.ip, "viewer refused: {error}");
            Ok(refused(error))
        }
        Err(error) => Err(error.into()),
    }
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
    let client = client(&hook);
    match state.gateway.viewer_left(&hook.app, &hook.stream, &client) {
        Ok(left) => {
            let change = left.outcome;
            info!(camera = %change.id, client = %client, ip = %hook.ip, viewers = change.viewers, "viewer left");
            Ok(accepted())
        }
        Err(GatewayError::OnDemand(error)) => Ok(refused(error)),
        Err(error) => Err(error.into()),
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
    if let Ok(id) = state.gateway.published(&hook.app, &hook.stream, published) {
        debug!(camera = %id, published, "stream publishing changed");
    }
    Ok(accepted())
}
