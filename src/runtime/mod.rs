//! The thread runtime: one OS thread per camera and the supervisor that owns them.
//!
//! - `supervisor`: [`Supervisor`], the owner of every camera thread — start, stop, the cap, stop deadlines,
//!   stats sampling, events.
//! - `worker` (private): one camera's thread — sessions, retry with backoff, panics caught and reported.
//! - `stats`: rates from the workers' counters, and the [`CameraStatus`] the supervisor publishes.
//! - `allocator`: glibc's allocator settings for a process with hundreds of camera threads.
//! - `clock`: the [`Clock`](clock::Clock) backoffs and lingers wait on, replaceable in tests.
//! - `cpu` (private): the CPU each camera's threads use, from `/proc`.
//! - `wake` (private): interrupting a camera thread's blocking socket wait when it is stopped.
//!
//! Nothing here knows about HTTP or the gateway's policy; commands come in over channels and statuses go out
//! through a shared map and a broadcast channel.

pub mod allocator;
pub mod clock;
mod cpu;
mod gates;
mod stats;
mod supervisor;
mod wake;
mod worker;

pub use crate::pipeline::fence::Fence;
pub use gates::OutputGates;
/// Exposed for the benchmark harness only (the supervisor's per-camera tick is measured directly).
#[doc(hidden)]
pub use stats::RateWindow;
pub use stats::{CameraStatus, Event, Rates, RetryStatus, ViewerCounts, WorkerState};
pub use supervisor::{Faults, SessionFault, StartOutcome, Supervisor, SupervisorConfig};
