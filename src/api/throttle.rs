//! Failed authentication is throttled per client address, so tokens and signatures cannot be guessed at line
//! rate: after `auth.max_failures_per_minute` failures (401, or 403 for a bad signature) in a minute, the
//! address is answered 429 until that minute is over — whatever it sends, a valid token included.
//!
//! The address is the TCP peer's. Behind a reverse proxy every client shares the proxy's address, so one
//! guesser locks everyone behind that proxy out for a minute; that is the price of not trusting
//! `X-Forwarded-For`, which any client can write. The table is bounded (`MAX_ADDRESSES`): when it is full,
//! entries whose minute is over are dropped first.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;

/// Most addresses remembered at once.
pub const MAX_ADDRESSES: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(60);

/// Failed authentications per client address in the current minute.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

impl AuthThrottle {
    fn blocked(&self, client: Option<IpAddr>, limit: u32, now: Instant) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.get(&client).is_some_and(|(since, count)| now.duration_since(*since) < WINDOW && *count >= limit)
    }

    fn record_failure(&self, client: Option<IpAddr>, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&client) {
            failures.retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
            if failures.len() >= MAX_ADDRESSES
                && let Some(oldest) = failures.iter().min_by_key(|(_, (since, _))| *since).map(|(k, _)| *k)
            {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(client).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    /// Addresses remembered now (for tests).
    pub fn len(&self) -> usize {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Middleware: answers 429 for an address over its failures, and counts the failures of the others.
pub async fn throttle(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let limit = state.settings.max_auth_failures_per_minute;
    if state.auth_throttle.blocked(client, limit, Instant::now()) {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed authentications from this address; wait a minute (limit {limit} per minute)"),
        )
        .with_limit("auth.max_failures_per_minute")
        .into_response();
    }
    let response = next.run(request).await;
    let failed = response.status() == StatusCode::UNAUTHORIZED
        || (response.status() == StatusCode::FORBIDDEN && response.headers().contains_key(SIGNATURE_REFUSED));
    if failed {
        state.auth_throttle.record_failure(client, Instant::now());
    }
    response
}

/// Set on a 403 caused by a bad viewer signature, so the throttle counts it as a failed authentication.
pub const SIGNATURE_REFUSED: &str = "x-camgate-signature-refused";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_for_the_rest_of_its_minute_and_others_are_not() {
        let throttle = AuthThrottle::default();
        let (a, b) = (Some("10.0.0.1".parse().unwrap()), Some("10.0.0.2".parse().unwrap()));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(!throttle.blocked(a, 3, t0));
            throttle.record_failure(a, t0);
        }
        assert!(throttle.blocked(a, 3, t0 + Duration::from_secs(59)));
        assert!(!throttle.blocked(b, 3, t0), "another address is not");
        assert!(!throttle.blocked(a, 3, t0 + WINDOW), "the minute is over");
        throttle.record_failure(a, t0 + WINDOW);
        assert!(!throttle.blocked(a, 3, t0 + WINDOW), "and the count starts over");
    }

    #[test]
    fn the_table_stays_bounded() {
        let throttle = AuthThrottle::default();
        let t0 = Instant::now();
        for n in 0..(MAX_ADDRESSES as u32 + 500) {
            throttle.record_failure(Some(IpAddr::from(n.to_be_bytes())), t0);
        }
        assert!(throttle.len() <= MAX_ADDRESSES);
    }
}
