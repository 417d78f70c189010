//! A camera whose clock moves forward while its video stalls: an RTSP relay in front of the fixture server
//! that, part-way into a session, adds the same jump to both streams' RTP timestamps and holds the video back
//! for a while, as camgate saw from camera servers under load (BENCHMARKS.md, "the latency tail at 300
//! cameras"). The audio keeps flowing, so its jump arrives at once and a reader sees the clock run ahead of
//! time; the video's arrives with the stall, which looks like time that really passed.
//!
//! Only interleaved TCP passes through it (a client that asks for UDP would get its media from the server
//! directly), so a test must ask for TCP. RTCP is relayed untouched: its sender reports keep mapping the
//! unshifted RTP times to wall time, which makes the jump a lasting one for libavformat's RTCP-synchronised
//! timestamps too.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// What happens to a session's clock, timed from its first RTP packet.
#[derive(Debug, Clone, Copy)]
pub struct ClockMove {
    /// When the move happens.
    pub after: Duration,
    /// How far both streams' timestamps move forward.
    pub jump: Duration,
    /// How long the video is held back from its second packet with the moved clock on (then released at once,
    /// in order). Not from the first: libavformat's H.264 parser hands a frame on only when the next one
    /// begins, so this way the first moved frame reaches the reader when the stall ends, as if the camera's
    /// server had stalled across the move.
    pub video_stall: Duration,
}

/// The relay (see the module's doc). Every connection to it is relayed to the upstream server; each session's
/// clock moves once.
pub struct ClockMoveRelay {
    port: u16,
    closed: Arc<AtomicBool>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    video_shifted: AtomicUsize,
    audio_shifted: AtomicUsize,
    video_released: AtomicUsize,
}

impl ClockMoveRelay {
    /// Relays every connection to 127.0.0.1:`upstream`, moving each session's clock as `clock_move` says.
    pub fn start(upstream: u16, clock_move: ClockMove) -> ClockMoveRelay {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("cannot bind 127.0.0.1:0");
        let port = listener.local_addr().expect("listener has no address").port();
        listener.set_nonblocking(true).expect("cannot make the listener non-blocking");
        let closed = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        {
            let (closed, counts) = (Arc::clone(&closed), Arc::clone(&counts));
            thread::Builder::new()
                .name(format!("clock-move-{port}"))
                .spawn(move || {
                    while !closed.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((client, _)) => {
                                let _ = client.set_nonblocking(false);
                                if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) {
                                    relay(client, server, clock_move, &closed, &counts);
                                }
                            }
                            Err(_) => thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
                .expect("cannot start the relay thread");
        }
        ClockMoveRelay { port, closed, counts }
    }

    /// `rtsp://127.0.0.1:PORT/<mount>`.
    pub fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{mount}", self.port)
    }

    /// RTP packets whose timestamps were moved so far: (video, audio).
    pub fn shifted(&self) -> (usize, usize) {
        (self.counts.video_shifted.load(Ordering::SeqCst), self.counts.audio_shifted.load(Ordering::SeqCst))
    }

    /// How many sessions' held video has been released.
    pub fn video_released(&self) -> usize {
        self.counts.video_released.load(Ordering::SeqCst)
    }
}

impl Drop for ClockMoveRelay {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// One pump per direction: the client's requests pass as they are, the server's answers and media through
/// [`Session`].
fn relay(client: TcpStream, server: TcpStream, clock_move: ClockMove, closed: &Arc<AtomicBool>, counts: &Arc<Counts>) {
    let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone()) else { return };
    let (Ok(mut from_server), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) else { return };
    // Short read timeouts so the pumps notice the relay closing, and the held video is released on time.
    let _ = from_client.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = from_server.set_read_timeout(Some(Duration::from_millis(20)));
    let closed_up = Arc::clone(closed);
    let _ = thread::Builder::new().name("clock-move-up".into()).spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        while !closed_up.load(Ordering::Relaxed) {
            match from_client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if to_server.write_all(&buf[..n]).is_err() => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = to_server.shutdown(Shutdown::Both);
    });
    let (closed_down, counts) = (Arc::clone(closed), Arc::clone(counts));
    let _ = thread::Builder::new().name("clock-move-down".into()).spawn(move || {
        let mut session = Session::new(clock_move, counts);
        let mut buf = vec![0u8; 64 * 1024];
        while !closed_down.load(Ordering::Relaxed) {
            let ok = match from_server.read(&mut buf) {
                Ok(0) => false,
                Ok(n) => session.receive(&buf[..n], &mut to_client).is_ok(),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => true,
                Err(_) => false,
            };
            if !ok || session.release_if_due(&mut to_client).is_err() {
                break;
            }
        }
        let _ = to_client.shutdown(Shutdown::Both);
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    Audio,
}

/// The server-to-client half of one session: RTSP answers, and `$`-framed RTP and RTCP.
struct Session {
    clock_move: ClockMove,
    counts: Arc<Counts>,
    pending: Vec<u8>,
    /// RTP payload type → the media it carries and its clock rate, from the SDP.
    payload_types: HashMap<u8, (Kind, u32)>,
    first_rtp: Option<Instant>,
    /// Whether the first video packet with the moved clock has passed (the stall starts after it).
    moved_video_seen: bool,
    /// Video frames held back, and when they go.
    held: Vec<u8>,
    release_at: Option<Instant>,
    released: bool,
}

impl Session {
    fn new(clock_move: ClockMove, counts: Arc<Counts>) -> Session {
        Session {
            clock_move,
            counts,
            pending: Vec::new(),
            payload_types: HashMap::new(),
            first_rtp: None,
            moved_video_seen: false,
            held: Vec::new(),
            release_at: None,
            released: false,
        }
    }

    fn receive(&mut self, bytes: &[u8], to: &mut impl Write) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        let mut used = 0;
        while let Some(len) = self.next_unit(&self.pending[used..]) {
            let unit = self.pending[used..used + len].to_vec();
            used += len;
            self.pass(unit, to)?;
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// The length of the complete unit at the start of `bytes`, if it has all arrived.
    fn next_unit(&self, bytes: &[u8]) -> Option<usize> {
        if bytes.first() == Some(&b'$') {
            let len = 4 + usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]));
            return (bytes.len() >= len).then_some(len);
        }
        let head = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let text = String::from_utf8_lossy(&bytes[..head]);
        let body = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        (bytes.len() >= head + body).then_some(head + body)
    }

    fn pass(&mut self, mut unit: Vec<u8>, to: &mut impl Write) -> io::Result<()> {
        if unit[0] != b'$' {
            self.read_sdp(&String::from_utf8_lossy(&unit));
            return to.write_all(&unit);
        }
        let rtp = unit[1] % 2 == 0 && unit.len() >= 4 + 12 && unit[4] >> 6 == 2;
        let media = if rtp { self.payload_types.get(&(unit[5] & 0x7f)).copied() } else { None };
        let Some((kind, rate)) = media else { return to.write_all(&unit) };
        let now = Instant::now();
        let moved = now >= *self.first_rtp.get_or_insert(now) + self.clock_move.after;
        if moved {
            let ticks = u32::try_from(self.clock_move.jump.as_millis() * u128::from(rate) / 1000).unwrap_or(u32::MAX);
            let timestamp = u32::from_be_bytes([unit[8], unit[9], unit[10], unit[11]]).wrapping_add(ticks);
            unit[8..12].copy_from_slice(&timestamp.to_be_bytes());
            let count = match kind {
                Kind::Video => &self.counts.video_shifted,
                Kind::Audio => &self.counts.audio_shifted,
            };
            count.fetch_add(1, Ordering::SeqCst);
        }
        if kind == Kind::Video && moved && !self.released && std::mem::replace(&mut self.moved_video_seen, true) {
            self.release_at.get_or_insert(now + self.clock_move.video_stall);
            self.held.extend_from_slice(&unit);
            return self.release_if_due(to);
        }
        to.write_all(&unit)
    }

    /// Sends the held video once its stall is over.
    fn release_if_due(&mut self, to: &mut impl Write) -> io::Result<()> {
        if self.released || self.release_at.is_none_or(|at| Instant::now() < at) {
            return Ok(());
        }
        self.released = true;
        self.counts.video_released.fetch_add(1, Ordering::SeqCst);
        to.write_all(&std::mem::take(&mut self.held))
    }

    /// Learns the payload types of an SDP (a DESCRIBE's answer); other messages have no `m=` lines.
    fn read_sdp(&mut self, message: &str) {
        let mut kind = None;
        for line in message.lines() {
            if let Some(media) = line.strip_prefix("m=") {
                kind = match media.split(' ').next() {
                    Some("video") => Some(Kind::Video),
                    Some("audio") => Some(Kind::Audio),
                    _ => None,
                };
            } else if let (Some(kind), Some(map)) = (kind, line.strip_prefix("a=rtpmap:")) {
                // a=rtpmap:96 H264/90000
                let mut parts = map.split([' ', '/']);
                let pt = parts.next().and_then(|p| p.trim().parse::<u8>().ok());
                let rate = parts.nth(1).and_then(|r| r.trim().parse::<u32>().ok());
                if let (Some(pt), Some(rate)) = (pt, rate) {
                    self.payload_types.insert(pt, (kind, rate));
                }
            }
        }
    }
}
