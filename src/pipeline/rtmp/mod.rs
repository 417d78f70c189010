//! camgate's own RTMP writer (`rtmp_writer = "buffered"`): publishes to an `rtmp://` server over one TCP
//! connection, taking the FLV muxer's tags through a custom I/O context and sending each as an RTMP message —
//! what libavformat's RTMP client does, in one `send` per packet instead of a `poll` and a `send` per piece.
//!
//! Why: a copied camera costs little but system calls, and after camgate's own RTSP reader most of them were
//! the output's. libavformat's client writes each message's header, each 4 KiB chunk and each chunk's one-byte
//! header with its own `send`, each behind a `poll`: about four system calls per packet (BENCHMARKS.md, "Copy:
//! camgate's own RTMP writer"). Here a packet's message is built in memory and leaves in one `send`.
//!
//! What it does not do is left to libavformat's client, which then publishes instead (logged): RTMPS,
//! credentials in the URL (Adobe/Akamai authentication), `mp4:` stream names.
//!
//! Layout: [`amf`] encodes commands and reads answers, [`chunk`] cuts and joins the chunk stream,
//! [`session`] runs the connection, and this file turns FLV into messages.

mod amf;
mod chunk;
mod session;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

pub(crate) use self::session::{Progress, RtmpError};
use self::session::{Session, Target};
use super::interrupt::Interrupter;

/// The FLV file header and the first "previous tag size", which RTMP does not carry.
const FLV_HEADER: usize = 13;
/// An FLV tag's header.
const TAG_HEADER: usize = 11;
/// What libavformat's client puts before the muxer's metadata (an AMF0 string), as servers expect it.
const SET_DATA_FRAME: &[u8] = b"\x02\x00\x0d@setDataFrame";

/// A stream being published, written to as an FLV file: the muxer's custom I/O context writes here.
pub(crate) struct Publisher {
    /// Shared with the output that owns the muxer, and with a reader that sends held media
    /// (`pipeline::held_sends`); all on the camera's thread (the offline slate's takes the outputs over whole),
    /// so the lock is not contended while packets flow.
    session: Outbox,
    /// FLV bytes of a tag not yet complete.
    pending: Vec<u8>,
    /// How much of the FLV header is still to be skipped.
    header_left: usize,
    /// The stream name, hidden from error text.
    playpath: String,
}

impl Publisher {
    /// Connects to `url` (an `rtmp://` URL whose host the caller has settled) and publishes its stream. The
    /// caller arms `interrupter`'s deadline.
    pub(crate) fn publish(url: &str, interrupter: &Arc<Interrupter>) -> Result<Publisher, RtmpError> {
        let target = Target::parse(url)?;
        let session = Outbox(Arc::new(Mutex::new(Session::publish(&target, interrupter)?)));
        Ok(Publisher { session, pending: Vec::new(), header_left: FLV_HEADER, playpath: target.playpath })
    }

    /// The session's queue, for the output and for whoever sends held media.
    pub(crate) fn outbox(&self) -> Outbox {
        self.session.clone()
    }

    /// Queues every whole tag at the start of `flv`; how many bytes they took.
    fn queue_tags(session: &mut Session, header_left: &mut usize, mut flv: &[u8]) -> usize {
        let start = flv.len();
        let skip = (*header_left).min(flv.len());
        *header_left -= skip;
        flv = &flv[skip..];
        while flv.len() >= TAG_HEADER {
            let size = u32::from_be_bytes([0, flv[1], flv[2], flv[3]]) as usize;
            let total = TAG_HEADER + size + 4;
            if flv.len() < total {
                break;
            }
            // 24 bits of milliseconds, then the top 8.
            let timestamp = u32::from_be_bytes([flv[7], flv[4], flv[5], flv[6]]);
            let body = &flv[TAG_HEADER..TAG_HEADER + size];
            match flv[0] & 0x1f {
                kind @ (8 | 9) => session.queue_media(kind, timestamp, body),
                18 => session.queue_media(18, timestamp, &[SET_DATA_FRAME, body].concat()),
                _ => {}
            }
            flv = &flv[total..];
        }
        start - flv.len()
    }

    /// Logs `error` (stream key hidden) and turns it into the `io::Error` the I/O context reports.
    fn failed(&self, error: RtmpError) -> std::io::Error {
        if !matches!(error, RtmpError::Interrupted) {
            super::ffmpeg_log::writer_error(&error.to_string().replace(&self.playpath, "***"));
        }
        std::io::Error::from_raw_os_error(error.errno())
    }
}

impl std::io::Write for Publisher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut session = self.session.lock();
        if self.pending.is_empty() {
            let used = Publisher::queue_tags(&mut session, &mut self.header_left, buf);
            self.pending.extend_from_slice(&buf[used..]);
        } else {
            self.pending.extend_from_slice(buf);
            let used = Publisher::queue_tags(&mut session, &mut self.header_left, &self.pending);
            self.pending.drain(..used);
        }
        if session.unsent() > 0 && !session.may_wait() {
            let sent = session.send();
            drop(session);
            sent.map_err(|e| self.failed(e))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let sent = self.session.lock().send();
        sent.map_err(|e| self.failed(e))
    }
}

/// A publishing session's queue of bytes for the server, shared by its [`Publisher`] (inside the muxer), the
/// output that owns the muxer, and a reader that sends held media when it is about to wait.
#[derive(Clone)]
pub(crate) struct Outbox(Arc<Mutex<Session>>);

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Session> {
        // Everything that takes the lock runs on the camera's thread; a panic there ends the session anyway.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets media wait (`true`) for [`send_held`](Self::send_held), or sends each write at once (`false`,
    /// the start).
    pub(crate) fn hold(&self, held: bool) {
        self.lock().hold(held);
    }

    /// Sends held media, waiting as a write does (under the deadline the last write armed); a failure is
    /// reported by the next write.
    pub(crate) fn send_held(&self) {
        // Never nested in a write (one thread, and the reader waits only between them); should it ever be,
        // the write sends itself.
        if let Ok(mut session) = self.0.try_lock() {
            session.send_held();
        }
    }

    /// Sends what is held and holds no more: every write sends at once from now on.
    pub(crate) fn let_go(&self) {
        self.hold(false);
        self.send_held();
    }

    /// Sends everything queued, waiting as a write does.
    pub(crate) fn send(&self) -> Result<(), RtmpError> {
        self.lock().send()
    }

    /// Where sending stands.
    pub(crate) fn progress(&self) -> Progress {
        self.lock().progress()
    }

    /// A reference that does not keep the session open.
    pub(crate) fn downgrade(&self) -> WeakOutbox {
        WeakOutbox(Arc::downgrade(&self.0))
    }
}

/// An [`Outbox`] that does not keep its session open: a finished output's connection closes when its muxer
/// goes, whoever still remembers it.
pub(crate) struct WeakOutbox(Weak<Mutex<Session>>);

impl WeakOutbox {
    /// The outbox, if its session is still open.
    pub(crate) fn upgrade(&self) -> Option<Outbox> {
        self.0.upgrade().map(Outbox)
    }
}
