//! Shared helpers for camgate's integration tests: real servers to talk to and
//! a deadline-bounded stream probe. Use with `mod common;` from `tests/*.rs`.
//!
//! - [`RtspServer`]: synthetic live cameras (tests/fixtures/rtsp_server.py).
//! - [`RtmpServer`]: a private nginx-rtmp to publish to and play from.
//! - [`SrsServer`]: a private SRS, from a binary built by hand (`CAMGATE_SRS`), for the `#[ignore]`d SRS tests.
//! - [`Etcd`]: a private single-member etcd, for cluster tests.
//! - [`SilentServer`]: a camera that accepts TCP and never answers.
//! - [`ClockMoveRelay`]: a camera whose clock moves forward while its video stalls.
//! - [`ReplayServer`]: a recorded camera played round and round to a thousand sessions (the bench's source).
//! - [`probe`]: what a viewer of an RTMP/RTSP URL or an .flv file gets.
//! - [`wait_for`]: polling a condition with a deadline.
//! - [`ChildGuard`]: a child process that dies with the test binary.
//! - [`record_viewer`]: what a viewer of the built-in preview gets, into a file.
//!
//! Every server binds 127.0.0.1 on a fresh port, so tests can run in parallel,
//! and is stopped when dropped.

// Each test binary compiles its own copy of this module and uses only part of
// it; without these, every unused helper would fail `clippy -D warnings`.
#![allow(dead_code, unused_imports)]

pub mod clock_move;
pub mod etcd;
pub mod net;
pub mod poll;
pub mod preview;
pub mod probe;
pub mod process;
pub mod replay;
pub mod rtmp;
pub mod rtsp;
pub mod srs;

pub use clock_move::{ClockMove, ClockMoveRelay};
pub use etcd::Etcd;
pub use net::{FreezableRelay, SilentServer, free_port, wait_for_port};
pub use poll::{poll_for, wait_for};
pub use preview::record_viewer;
pub use probe::{
    AudioReport, DecodeReport, DtsViolation, ProbeOptions, ProbeReport, StopReason, StreamStats, VideoReport, decode,
    first_video_packet, init_ffmpeg, probe,
};
pub use process::{ChildGuard, cpu_time, own_threads_named, rss_bytes};
pub use replay::{ReplayOptions, ReplayServer};
pub use rtmp::RtmpServer;
pub use rtsp::{RtspOptions, RtspServer, mount};
pub use srs::{SrsOptions, SrsServer};

/// The supervisor settings of a test rig: the defaults, with loopback cameras allowed (the fixture cameras are
/// on 127.0.0.1, which camgate refuses by default).
pub fn rig() -> camgate::SupervisorConfig {
    camgate::SupervisorConfig { camera_hosts: std::sync::Arc::new(rig_hosts()), ..camgate::SupervisorConfig::default() }
}

/// The default host policy with 127.0.0.0/8 allowed, as `CAMGATE_ALLOW_CAMERA_HOSTS=127.0.0.0/8` gives.
pub fn rig_hosts() -> camgate::model::HostPolicy {
    camgate::model::HostPolicy::default().allowing(&["127.0.0.0/8"]).expect("a valid rule")
}
