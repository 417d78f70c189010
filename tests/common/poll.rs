//! Waiting for a condition with a deadline: tests assert on states they poll for, never on how long they slept.

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `within`.
pub fn wait_for<T>(within: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll_for(within, check).unwrap_or_else(|| panic!("timed out after {within:?} waiting for {what}"))
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `within`: `None` if it never did, for a caller
/// whose timeout is not yet a failure, or who has more to say about one than [`wait_for`].
pub fn poll_for<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
