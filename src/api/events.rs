//! `GET /api/v1/events`: server-sent events, so a dashboard sees state changes and stats without polling.
//!
//! A new stream first gets one `snapshot` event (every camera's status), then `status` events (a camera's
//! state changed, or its stats were refreshed, about once a second per camera) and `removed` events (a
//! stopped camera was forgotten). A client too slow to keep up gets a `lagged` event saying how many events
//! it missed, and continues with newer ones. Streams end when the gateway shuts down. At most
//! `limits.event_clients` streams are open at once; one more is refused with 429.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::StreamExt;
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::error::RecvError;

use crate::runtime::Event;

use super::error::ApiError;

use super::state::AppState;

/// The event stream.
#[utoipa::path(
    get, path = "/api/v1/events", tag = "cameras",
    responses(
        (status = 200, description = "text/event-stream of `snapshot`, `status`, `removed` and `lagged` events; each `data` is JSON", content_type = "text/event-stream", body = String),
        (status = 429, description = "Too many event streams (`limits.event_clients`)", body = super::error::ErrorBody),
    )
)]
pub async fn events(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let client = state.gateway.event_client()?;
    let snapshot = SseEvent::default().event("snapshot").json_data(&client.snapshot).ok();
    let shutdown = state.gateway.shutdown_signal();
    let updates = stream::unfold((client, shutdown), |(mut client, mut shutdown)| async move {
        loop {
            let received = tokio::select! {
                received = client.events.recv() => received,
                _ = shutdown.wait_for(|down| *down) => return None,
            };
            let event = match received {
                Ok(event @ Event::Status(_)) => SseEvent::default().event("status").json_data(&event),
                Ok(event @ Event::Removed { .. }) => SseEvent::default().event("removed").json_data(&event),
                Err(RecvError::Lagged(missed)) => Ok(SseEvent::default().event("lagged").data(missed.to_string())),
                Err(RecvError::Closed) => return None,
            };
            // An event that cannot be serialized is skipped rather than ending the stream.
            if let Ok(event) = event {
                return Some((Ok(event), (client, shutdown)));
            }
        }
    });
    let stream = stream::iter(snapshot.map(Ok)).chain(updates);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
