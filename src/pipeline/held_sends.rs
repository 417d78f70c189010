//! Sends held while the camera's thread has packets in hand, and let go when it is about to wait: a copied
//! camera's batch of packets (`read_batch`) leaves for the RTMP server in one `send`, not one a packet.
//!
//! Why: with camgate's own reader and writer, about half of a copying camera's CPU was the kernel's, and over a
//! quarter of the whole went to the output's `send`s — each one a TCP segment, which on loopback also runs the
//! server's side of the stack and wakes the server (BENCHMARKS.md, "a batch in one send").
//! A batch is about seven packets (100 ms of 25 fps video and 48 kHz AAC); holding them until the reader
//! finds the camera's socket empty sends them as one segment. No packet waits for the camera: the reader lets
//! them go before it waits, so a packet is held only while the packets read with it are handled, in memory.
//!
//! Who does what: camgate's RTSP reader owns a [`HeldSends`] and calls [`HeldSends::send_held`] before each
//! wait on its socket; the session registers its outputs' queues ([`Outbox`]) with it when it copies the
//! video (a transcoder spends milliseconds a frame between writes, too long to hold a packet for). A writer
//! sends anyway once its queue has waited 5 ms or grown past 64 KiB (`rtmp::session`): a large keyframe goes at
//! once.
//! Outputs handed to the offline slate's thread, which reads no camera, are let go first
//! (`FlvOutput::stop_holding`); when the reader goes, so are any it still holds.

use super::rtmp::{Outbox, WeakOutbox};

/// The writers whose media waits for the reader's next wait.
#[derive(Default)]
pub(crate) struct HeldSends {
    outboxes: Vec<WeakOutbox>,
}

impl HeldSends {
    /// Holds `outbox`'s media from now on until the next [`send_held`](Self::send_held).
    pub(crate) fn hold(&mut self, outbox: &Outbox) {
        outbox.hold(true);
        self.outboxes.retain(|held| held.upgrade().is_some());
        self.outboxes.push(outbox.downgrade());
    }

    /// Sends what every held writer has queued: the thread is about to wait for its camera. A server that does
    /// not take it now is waited for as a write would be, so a slow server slows the camera as it did.
    pub(crate) fn send_held(&self) {
        for outbox in self.outboxes.iter().filter_map(WeakOutbox::upgrade) {
            outbox.send_held();
        }
    }
}

impl Drop for HeldSends {
    fn drop(&mut self) {
        for outbox in self.outboxes.iter().filter_map(WeakOutbox::upgrade) {
            outbox.let_go();
        }
    }
}
