//! `GET /api/v1/events`: server-sent events, so a dashboard sees state changes and stats without polling.
//!
//! A new stream first gets one `snapshot` event (every camera's status), then `status` events (a camera's
//! state changed, or its stats were refreshed, about once a second per camera) and `removed` events (a
//! stopped camera was forgotten). A client too slow to keep up gets a `lagged` event saying how many events
//! it missed, and continues with newer ones. Streams end when the gateway shuts down.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::StreamExt;
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::error::RecvError;

use crate::stats::Event;

use super::state::AppState;

/// The event stream.
#[utoipa::path(
    get, path = "/api/v1/events", tag = "cameras",
    responses((status = 200, description = "text/event-stream of `snapshot`, `status`, `removed` and `lagged` events; each `data` is JSON", content_type = "text/event-stream", body = String))
)]
pub async fn events(State(state): State<AppState>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Subscribe before taking the snapshot, so no change falls between the two.
    let receiver = state.supervisor.subscribe();
    let snapshot = SseEvent::default().event("snapshot").json_data(state.supervisor.snapshot()).ok();
    let shutdown = state.shutdown_signal();
    let updates = stream::unfold((receiver, shutdown), |(mut receiver, mut shutdown)| async move {
        loop {
            if *shutdown.borrow() {
                return None;
            }
            let received = tokio::select! {
                received = receiver.recv() => received,
                _ = shutdown.changed() => return None,
            };
            let event = match received {
                Ok(event @ Event::Status(_)) => SseEvent::default().event("status").json_data(&event),
                Ok(event @ Event::Removed { .. }) => SseEvent::default().event("removed").json_data(&event),
                Err(RecvError::Lagged(missed)) => Ok(SseEvent::default().event("lagged").data(missed.to_string())),
                Err(RecvError::Closed) => return None,
            };
            // An event that cannot be serialized is skipped rather than ending the stream.
            if let Ok(event) = event {
                return Some((Ok(event), (receiver, shutdown)));
            }
        }
    });
    let stream = stream::iter(snapshot.map(Ok)).chain(updates);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
