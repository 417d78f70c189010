//! Bearer-token authentication: when tokens are configured, the routes it wraps answer 401 unless the request
//! carries `Authorization: Bearer <one of them>`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;

/// Middleware: lets the request through with a valid token, or when no tokens are configured.
pub async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if is_valid(&state.settings.tokens, bearer(request.headers())) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
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
    // Every token is compared, and each comparison takes the same time whatever matches, so the answer's
    // timing does not tell how much of a guess was right.
    tokens.is_empty() || presented.is_some_and(|p| tokens.iter().fold(false, |ok, t| constant_time_eq(p, t) | ok))
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
