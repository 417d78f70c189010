//! Who may do what: operators control, viewers only watch.
//!
//! - **Operator tokens** (`auth.tokens`) open every route. With none configured the API is open, as the old
//!   service was (and camgate warns at start if it listens beyond loopback).
//! - **Viewer tokens** (`auth.viewer_tokens`) open only the watch routes — the built-in preview and snapshots;
//!   anywhere else they answer 403.
//! - **Hook tokens** (`auth.hook_tokens`) open only the RTMP server's hook routes (`/api/v1/srs/on_*`); anywhere
//!   else they answer 403. SRS cannot send a header, so its hook URLs carry a token in the query, and SRS
//!   writes those URLs into its log at every call: there, a hook token exposes the hooks, not the API.
//! - **Signed viewer URLs** (with a `viewer_secret`) open the watch routes of their one camera until they
//!   expire; with a secret configured, the watch routes demand a token or a valid signature even when no tokens
//!   are configured.
//! - **Browser origins**: with `cors.allowed_origins` restricted, a state-changing request that a browser sends
//!   from another origin is refused (403) — CORS alone does not stop a plain form post, which is how any web
//!   page could drive an open gateway.
//!
//! Tokens are compared in constant time. Failed attempts are counted per client address (see `throttle`).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;
use crate::model::CameraId;

/// What a request's bearer token makes its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May do anything.
    Operator,
    /// May only watch.
    Viewer,
    /// May only call the RTMP server's hooks.
    Hooks,
}

/// The caller's role from its `Authorization: Bearer` header, if the token is one of the configured ones.
pub fn role(state: &AppState, headers: &HeaderMap) -> Option<Role> {
    let presented = bearer(headers)?;
    let settings = &state.settings;
    if matches_any(&settings.tokens, presented) {
        Some(Role::Operator)
    } else if matches_any(&settings.viewer_tokens, presented) {
        Some(Role::Viewer)
    } else if matches_any(&settings.hook_tokens, presented) {
        Some(Role::Hooks)
    } else {
        None
    }
}

/// Whether `presented` (a hook URL's `?token=`, or a bearer token) may call the RTMP server's hooks: an
/// operator or hook token; anything when no tokens are configured.
pub fn may_call_hooks(state: &AppState, presented: Option<&str>) -> bool {
    let settings = &state.settings;
    is_valid(&settings.tokens, presented) || presented.is_some_and(|p| matches_any(&settings.hook_tokens, p))
}

/// Middleware for operator routes: through with an operator token or when no tokens are configured; 403 for
/// a viewer or hook token; 401 otherwise.
pub async fn require_operator(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.settings.tokens.is_empty() {
        return next.run(request).await;
    }
    match role(&state, request.headers()) {
        Some(Role::Operator) => next.run(request).await,
        Some(Role::Viewer) => ApiError::new(StatusCode::FORBIDDEN, "this token may only watch cameras")
            .with_field("authorization")
            .into_response(),
        Some(Role::Hooks) => hooks_only().into_response(),
        None => ApiError::unauthorized().into_response(),
    }
}

/// Whether a request may watch camera `id` (the built-in preview, snapshots): an operator or viewer token; a
/// valid signed URL (`query`) for this camera; or anyone, when neither tokens nor a viewer secret are
/// configured.
pub fn authorize_watch(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    id: &CameraId,
) -> Result<(), ApiError> {
    let signed = state.gateway.signs_viewer_urls();
    if state.settings.tokens.is_empty() && !signed {
        return Ok(());
    }
    match role(state, headers) {
        Some(Role::Operator | Role::Viewer) => return Ok(()),
        Some(Role::Hooks) => return Err(hooks_only()),
        None => {}
    }
    if signed {
        match state.gateway.check_viewer_signature(id, query.unwrap_or("")) {
            Ok(()) => return Ok(()),
            Err(crate::gateway::viewer_urls::SignatureError::Missing) => {}
            Err(error) => {
                return Err(ApiError::new(StatusCode::FORBIDDEN, format!("viewer URL refused: {error}"))
                    .with_field("signature"));
            }
        }
    }
    Err(ApiError::unauthorized())
}

/// The refusal of a hook token anywhere but the hooks.
fn hooks_only() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "this token may only call the RTMP server's hooks").with_field("authorization")
}

/// Middleware refusing state-changing requests that a browser sends from an origin `cors.allowed_origins`
/// does not list. With `["*"]` (the default, for the old front ends) everything passes.
pub async fn check_origin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let cors = &state.settings.cors;
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state && !cors.allowed_origins.iter().any(|o| o == "*") {
        let origin = request.headers().get(header::ORIGIN).map(|o| o.to_str().unwrap_or("(invalid)"));
        if let Some(origin) = origin
            && !cors.allowed_origins.iter().any(|allowed| allowed == origin)
        {
            return ApiError::new(StatusCode::FORBIDDEN, format!("requests from origin {origin:?} are not allowed"))
                .with_field("origin")
                .into_response();
        }
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer …` header.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

/// Whether `presented` is one of `tokens`; anything is when none are configured.
pub(super) fn is_valid(tokens: &[String], presented: Option<&str>) -> bool {
    tokens.is_empty() || presented.is_some_and(|p| matches_any(tokens, p))
}

/// Every token is compared, and each comparison takes the same time whatever matches, so the answer's timing
/// does not tell how much of a guess was right.
fn matches_any(tokens: &[String], presented: &str) -> bool {
    tokens.iter().fold(false, |ok, t| constant_time_eq(presented, t) | ok)
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
