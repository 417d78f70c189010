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
//! In a cluster a hook belongs to the node that runs the stream's camera (it counts the viewers and starts
//! the camera): any node forwards it there and relays the answer. A play of a camera no node has taken yet is
//! refused with 503, so the player retries.
//!
//! SRS cannot send an `Authorization` header, so when API tokens are configured the hook URL carries one as
//! `?token=…` (a bearer header is accepted too): a hook token (`auth.hook_tokens`), which opens these routes
//! only, since SRS logs the URLs it calls; an operator token works too. With a viewer secret configured,
//! `on_play` also checks the player's signed viewer URL (SRS passes its query as `param`), so SRS's own
//! HTTP-FLV, HLS and WebRTC viewers need one too.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};
use utoipa::ToSchema;

use crate::gateway::GatewayError;
use crate::gateway::OnDemandError;
use crate::gateway::cluster::FORWARDED_FROM;

use super::auth;
use super::body::JsonBody;
use super::error::ApiError;
use super::state::AppState;

/// The fields of an SRS hook body that camgate reads; SRS sends more, which are ignored.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    if auth::may_call_hooks(state, presented) { Ok(()) } else { Err(ApiError::unauthorized()) }
}

/// A player started: counts it and starts its on-demand camera if it is the first. Answered at once; the
/// camera starts in the background and SRS holds the player until the stream is published.
#[utoipa::path(
    post, path = "/api/v1/srs/on_play", tag = "srs", request_body = SrsHook,
    params(("token" = Option<String>, Query, description = "hook or operator token, when tokens are configured")),
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
    if let Some(answer) = forward_to_owner(&state, &headers, "/api/v1/srs/on_play", &hook).await {
        return Ok(answer);
    }
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
    params(("token" = Option<String>, Query, description = "hook or operator token, when tokens are configured")),
    responses((status = 200, body = HookReply), (status = 404, description = "Unknown stream", body = HookReply))
)]
pub async fn on_stop(
    State(state): State<AppState>,
    Query(query): Query<HookQuery>,
    headers: HeaderMap,
    JsonBody(hook): JsonBody<SrsHook>,
) -> HookAnswer {
    check_token(&state, &query, &headers)?;
    if let Some(answer) = forward_to_owner(&state, &headers, "/api/v1/srs/on_stop", &hook).await {
        return Ok(answer);
    }
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
    params(("token" = Option<String>, Query, description = "hook or operator token, when tokens are configured")),
    responses((status = 200, body = HookReply))
)]
pub async fn on_publish(
    State(state): State<AppState>,
    Query(query): Query<HookQuery>,
    headers: HeaderMap,
    JsonBody(hook): JsonBody<SrsHook>,
) -> HookAnswer {
    check_token(&state, &query, &headers)?;
    if let Some(answer) = forward_to_owner(&state, &headers, "/api/v1/srs/on_publish", &hook).await {
        return Ok(answer);
    }
    record_publishing(&state, &hook, true)
}

/// A stream was unpublished; recorded, always accepted.
#[utoipa::path(
    post, path = "/api/v1/srs/on_unpublish", tag = "srs", request_body = SrsHook,
    params(("token" = Option<String>, Query, description = "hook or operator token, when tokens are configured")),
    responses((status = 200, body = HookReply))
)]
pub async fn on_unpublish(
    State(state): State<AppState>,
    Query(query): Query<HookQuery>,
    headers: HeaderMap,
    JsonBody(hook): JsonBody<SrsHook>,
) -> HookAnswer {
    check_token(&state, &query, &headers)?;
    if let Some(answer) = forward_to_owner(&state, &headers, "/api/v1/srs/on_unpublish", &hook).await {
        return Ok(answer);
    }
    record_publishing(&state, &hook, false)
}

/// Notes a stream's publishing state for on-demand bookkeeping; publishes are never refused, since that would
/// reject camgate's own stream.
fn record_publishing(state: &AppState, hook: &SrsHook, published: bool) -> HookAnswer {
    if let Ok(id) = state.gateway.published(&hook.app, &hook.stream, published) {
        debug!(camera = %id, published, "stream publishing changed");
    }
    Ok(accepted())
}

/// In a cluster, sends the hook to the node that runs its stream's camera and relays that node's answer
/// (`None`: this node answers it — it runs the camera, no camera publishes the stream, or the hook was
/// forwarded here already). A camera no node has taken yet refuses plays with 503, so the player retries;
/// the other hooks are bookkeeping and accepted.
async fn forward_to_owner(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    hook: &SrsHook,
) -> Option<(StatusCode, Json<HookReply>)> {
    // One hop only: two nodes whose views disagree for a moment must not pass a hook back and forth.
    if headers.contains_key(FORWARDED_FROM) {
        return None;
    }
    let cluster = state.gateway.cluster()?;
    let (id, owner) = cluster.owner_of_stream(&hook.app, &hook.stream)?;
    let is_play = hook.action == "on_play" || path.ends_with("/on_play");
    let unavailable = |msg: String| {
        if is_play {
            let status = StatusCode::SERVICE_UNAVAILABLE;
            (status, Json(HookReply { code: status.as_u16(), msg: Some(msg) }))
        } else {
            accepted()
        }
    };
    let url = match owner {
        Ok(None) => return None,
        Ok(Some(url)) => url,
        Err(()) => return Some(unavailable(format!("camera {id} has no node yet; retry"))),
    };
    let body = serde_json::to_value(hook).expect("hooks serialize");
    match cluster.forward(&url, reqwest::Method::POST, path, Some(&body)).await {
        Ok((status, answer)) => {
            let reply = serde_json::from_slice::<HookReply>(&answer)
                .unwrap_or_else(|_| HookReply { code: status.as_u16(), msg: Some(format!("node answered {status}")) });
            debug!(camera = %id, node = %url, %status, "hook forwarded to the camera's node");
            Some((StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY), Json(reply)))
        }
        Err(error) => {
            info!(camera = %id, %error, "cannot forward the hook to the camera's node");
            Some(unavailable(format!("camera {id}'s node does not answer; retry")))
        }
    }
}
