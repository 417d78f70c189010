//! Reading the built-in preview as a player would.

use std::time::{Duration, Instant};

/// Reads a preview viewer until it has delivered `min_bytes` or `within` passes, into `path` for probing.
/// Panics if the viewer's stream ends first.
pub fn record_viewer(mut viewer: camgate::preview::Viewer, path: &std::path::Path, min_bytes: usize, within: Duration) {
    let deadline = Instant::now() + within;
    let mut bytes = Vec::new();
    while bytes.len() < min_bytes && Instant::now() < deadline {
        match viewer.try_recv() {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("viewer ended early: {e}"),
        }
    }
    std::fs::write(path, &bytes).expect("write the recording");
}
