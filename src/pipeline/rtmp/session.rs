//! One RTMP publishing session over one TCP connection: the handshake, `connect`, `createStream` and
//! `publish` (as FFmpeg's RTMP client sends them), then messages queued by the caller and sent in as few writes
//! as possible, the server's control messages answered on the way, and `FCUnpublish` and `deleteStream` at the
//! end.
//!
//! Every wait is interruptible (`pipeline::net`); the caller arms the interrupter's deadline (the open timeout
//! for [`Session::publish`], the write timeout for each send).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::amf::{self, AmfError, Value};
use super::chunk::{self, ChunkError, ChunkReader, Message};
use crate::pipeline::interrupt::Interrupter;
use crate::pipeline::net::{self, NetError};

/// The chunk size camgate sends with (as FFmpeg, OBS and most encoders do): a video frame of 20 KB goes out in
/// five chunks, with one header byte between them.
pub(crate) const OUT_CHUNK_SIZE: usize = 4096;
/// The socket's send buffer (the kernel doubles it for its own bookkeeping). Left to itself, Linux grows a
/// send buffer towards 4 MiB, and camgate's large writes use it so fully that a server which stops reading
/// would go unnoticed for half a minute of a 1 Mbit/s camera, the write timeout never starting. A fixed
/// buffer still holds several keyframes, and carries 20 Mbit/s over a 100 ms round trip.
const SEND_BUFFER: usize = 128 * 1024;
/// What one handshake packet (C1, S1, S2 …) holds.
const HANDSHAKE_SIZE: usize = 1536;
/// How often the server's messages are looked for while publishing when no write had to wait: a status
/// that ends the stream, a ping to answer. FFmpeg looks every ten packets.
const INCOMING_EVERY: Duration = Duration::from_secs(1);

/// Chunk streams, as FFmpeg's client numbers them.
mod csid {
    pub(super) const CONTROL: u8 = 2;
    pub(super) const COMMAND: u8 = 3;
    pub(super) const AUDIO: u8 = 4;
    pub(super) const DATA: u8 = 5;
    pub(super) const VIDEO: u8 = 6;
    pub(super) const PUBLISH: u8 = 8;
}

/// RTMP message types.
mod kind {
    pub(super) const SET_CHUNK_SIZE: u8 = 1;
    pub(super) const ACKNOWLEDGEMENT: u8 = 3;
    pub(super) const USER_CONTROL: u8 = 4;
    pub(super) const WINDOW_ACK_SIZE: u8 = 5;
    pub(super) const AUDIO: u8 = 8;
    pub(super) const VIDEO: u8 = 9;
    pub(super) const AMF3_COMMAND: u8 = 17;
    pub(super) const COMMAND: u8 = 20;
}

/// Why the session failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RtmpError {
    /// The interrupter fired: a stop, a fence, or the operation's deadline.
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the RTMP server closed the connection")]
    Closed,
    /// The server answered with an error (`_error`, or a status of level `error`); its own words.
    #[error("Server error: {0}")]
    Refused(String),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Chunk(#[from] ChunkError),
    #[error("{0}")]
    Amf(#[from] AmfError),
    /// Something camgate's writer leaves to libavformat's (credentials in the URL, an odd path …).
    #[error("{0}")]
    Unsupported(String),
}

impl From<NetError> for RtmpError {
    fn from(error: NetError) -> RtmpError {
        match error {
            NetError::Interrupted => RtmpError::Interrupted,
            NetError::Io(e) => RtmpError::Io(e),
        }
    }
}

impl RtmpError {
    /// The FFmpeg error libavformat's RTMP client gives for the same failure.
    pub(crate) fn to_ffmpeg(&self) -> ffmpeg_next::Error {
        use ffmpeg_next::Error;
        match self {
            RtmpError::Interrupted => Error::Exit,
            RtmpError::Io(e) => Error::Other { errno: e.raw_os_error().unwrap_or(libc::EIO) },
            RtmpError::Closed => Error::Eof,
            // libavformat answers a server's error with -1 (EPERM).
            RtmpError::Refused(_) => Error::Other { errno: libc::EPERM },
            RtmpError::Protocol(_) | RtmpError::Chunk(_) | RtmpError::Amf(_) => Error::InvalidData,
            RtmpError::Unsupported(_) => Error::PatchWelcome,
        }
    }

    /// An errno for the `io::Error` a custom I/O context's write callback hands libavformat.
    pub(crate) fn errno(&self) -> i32 {
        match self {
            RtmpError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            RtmpError::Interrupted => libc::ETIMEDOUT,
            RtmpError::Closed => libc::EPIPE,
            RtmpError::Refused(_) => libc::EPERM,
            _ => libc::EINVAL,
        }
    }
}

/// Where to publish, read from an `rtmp://` URL the way FFmpeg's client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The application: the path's first part, or its first two when there are three or more.
    pub(crate) app: String,
    /// The stream name with its query (`livestream?secret=…`): secret, like the whole URL.
    pub(crate) playpath: String,
    /// `rtmp://host:port/app`, sent in `connect`.
    pub(crate) tc_url: String,
}

impl Target {
    /// Reads `url`; what FFmpeg's client would read differently, or camgate's does not do, is
    /// [`RtmpError::Unsupported`].
    pub(crate) fn parse(url: &str) -> Result<Target, RtmpError> {
        let unsupported = |why: &str| Err(RtmpError::Unsupported(why.to_owned()));
        let parsed = ::url::Url::parse(url).map_err(|e| RtmpError::Protocol(format!("unreadable URL: {e}")))?;
        if parsed.scheme() != "rtmp" {
            return unsupported("not plain rtmp://");
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return unsupported("credentials in the URL (RTMP authentication)");
        }
        if parsed.fragment().is_some() {
            return unsupported("a fragment in the URL");
        }
        let Some(host) = parsed.host_str() else { return unsupported("no host") };
        let port = parsed.port().unwrap_or(1935);
        let path = &parsed[::url::Position::BeforePath..::url::Position::AfterQuery];
        let next = path.strip_prefix('/').unwrap_or(path);
        let (app, name) = match next.find('/') {
            None => return unsupported("no application in the path"),
            Some(p) => {
                let after = &next[p + 1..];
                match (after.find('/'), after.find(':')) {
                    // A colon before the next slash belongs to a stream name (`mp4:dir/file`).
                    (None, _) => (&next[..p], after),
                    (Some(f), Some(c)) if c < f => (&next[..p], after),
                    (Some(f), _) => (&next[..p + 1 + f], &after[f + 1..]),
                }
            }
        };
        if app.is_empty() || name.is_empty() || app.contains('?') {
            return unsupported("an empty application or stream name");
        }
        let (stem, query) = name.split_at(name.find('?').unwrap_or(name.len()));
        if stem.contains(':') || stem.ends_with(".mp4") || stem.ends_with(".f4v") {
            return unsupported("an mp4: or prefixed stream name");
        }
        // FFmpeg drops a `.flv` ending from the stream name.
        let stem = if stem.len() > 4 && stem.ends_with(".flv") { &stem[..stem.len() - 4] } else { stem };
        let host_in_url =
            if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
        Ok(Target {
            host: host.to_owned(),
            port,
            app: app.to_owned(),
            playpath: format!("{stem}{query}"),
            tc_url: format!("rtmp://{host_in_url}:{port}/{app}"),
        })
    }
}

/// A publishing session.
pub(crate) struct Session {
    socket: TcpStream,
    interrupter: Arc<Interrupter>,
    reader: ChunkReader,
    /// Chunks queued and not yet sent.
    out: Vec<u8>,
    /// How much of `out` has been sent.
    sent: usize,
    /// The message stream `createStream` gave; 0 until then.
    stream_id: u32,
    playpath: String,
    transaction: f64,
    /// The server's acknowledgement window, and the bytes received (counted for it) and acknowledged.
    ack_window: u64,
    received: u64,
    acknowledged: u64,
    next_incoming_check: Instant,
    publishing: bool,
    /// Whether queued media may wait for [`send_held`](Self::send_held) (see `pipeline::held_sends`).
    held: bool,
    /// Since when the oldest byte of `out` has waited, while held.
    held_since: Option<Instant>,
    /// How often `out` has been emptied, and when last: a held packet has left once this count moves.
    emptied: u64,
    emptied_at: Instant,
    /// What went wrong in a [`send_held`](Self::send_held), for the next [`send`](Self::send) to return.
    failed: Option<RtmpError>,
}

/// How long and how much queued media may wait for [`Session::send_held`] before a write sends it anyway: a
/// copied camera's batch is handled in well under a millisecond, so these bound only the unexpected.
const HOLD_AT_MOST: Duration = Duration::from_millis(5);
const HOLD_AT_MOST_BYTES: usize = 64 * 1024;

/// Where a session's sending stands (see [`Session::progress`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Bytes queued and not yet sent.
    pub(crate) unsent: usize,
    /// How often everything queued has been sent, and when last.
    pub(crate) emptied: u64,
    pub(crate) emptied_at: Instant,
}

impl Session {
    /// Connects to `target` and publishes its stream. The caller arms the interrupter's deadline.
    pub(crate) fn publish(target: &Target, interrupter: &Arc<Interrupter>) -> Result<Session, RtmpError> {
        let address = net::resolve(&target.host, target.port)?;
        let socket = net::connect(address, interrupter)?;
        socket2::SockRef::from(&socket).set_send_buffer_size(SEND_BUFFER)?;
        let mut session = Session {
            socket,
            interrupter: Arc::clone(interrupter),
            reader: ChunkReader::default(),
            out: Vec::with_capacity(64 * 1024),
            sent: 0,
            stream_id: 0,
            playpath: target.playpath.clone(),
            transaction: 0.0,
            ack_window: 0,
            received: 0,
            acknowledged: 0,
            next_incoming_check: Instant::now() + INCOMING_EVERY,
            publishing: false,
            held: false,
            held_since: None,
            emptied: 0,
            emptied_at: Instant::now(),
            failed: None,
        };
        session.handshake()?;
        session.queue(csid::CONTROL, (kind::SET_CHUNK_SIZE, 0, 0), &(OUT_CHUNK_SIZE as u32).to_be_bytes());
        let connect = session.command("connect", |body| {
            amf::put_string_object(
                body,
                &[
                    ("app", &target.app),
                    ("type", "nonprivate"),
                    ("flashVer", "FMLE/3.0 (compatible; camgate)"),
                    ("tcUrl", &target.tc_url),
                ],
            );
        });
        session.send()?;
        session.await_result(connect)?;
        let playpath = session.playpath.clone();
        for name in ["releaseStream", "FCPublish"] {
            session.command(name, |body| {
                amf::put_null(body);
                amf::put_string(body, &playpath);
            });
        }
        let create = session.command("createStream", amf::put_null);
        session.send()?;
        let answer = session.await_result(create)?;
        let stream_id = answer.get(3).and_then(Value::as_number).filter(|id| id.is_finite() && *id >= 0.0);
        session.stream_id = stream_id
            .map(|id| id as u32)
            .ok_or_else(|| RtmpError::Protocol("createStream was answered without a stream id".into()))?;
        session.transaction += 1.0;
        let mut body = Vec::new();
        amf::put_string(&mut body, "publish");
        amf::put_number(&mut body, session.transaction);
        amf::put_null(&mut body);
        amf::put_string(&mut body, &playpath);
        amf::put_string(&mut body, "live");
        session.queue(csid::PUBLISH, (kind::COMMAND, session.stream_id, 0), &body);
        session.send()?;
        session.await_publish_start()?;
        session.publishing = true;
        Ok(session)
    }

    /// C0 and C1, S0, S1 and S2, C2: the plain handshake, which every RTMP server accepts from a publisher.
    fn handshake(&mut self) -> Result<(), RtmpError> {
        let mut c0c1 = Vec::with_capacity(1 + HANDSHAKE_SIZE);
        c0c1.push(3);
        // Time and zero version (a plain handshake), then bytes the server echoes; they need not be secret.
        c0c1.extend_from_slice(&[0; 8]);
        let mut seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
        while c0c1.len() < 1 + HANDSHAKE_SIZE {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            c0c1.push(seed as u8);
        }
        self.out.extend_from_slice(&c0c1);
        self.send()?;
        let mut answer = vec![0u8; 1 + 2 * HANDSHAKE_SIZE];
        let mut have = 0;
        while have < answer.len() {
            have += self.receive_into(&mut answer[have..])?;
        }
        if answer[0] != 3 {
            return Err(RtmpError::Protocol(format!("not an RTMP server (handshake version {})", answer[0])));
        }
        self.out.extend_from_slice(&answer[1..1 + HANDSHAKE_SIZE]);
        self.send()
    }

    /// Queues command `name` with the next transaction number and what `body` adds; returns the number.
    fn command(&mut self, name: &str, body: impl FnOnce(&mut Vec<u8>)) -> f64 {
        self.transaction += 1.0;
        let mut payload = Vec::with_capacity(256);
        amf::put_string(&mut payload, name);
        amf::put_number(&mut payload, self.transaction);
        body(&mut payload);
        self.queue(csid::COMMAND, (kind::COMMAND, 0, 0), &payload);
        self.transaction
    }

    /// Queues one message (type, message stream, timestamp).
    fn queue(&mut self, csid: u8, message: (u8, u32, u32), payload: &[u8]) {
        chunk::put_message(&mut self.out, csid, message, payload, OUT_CHUNK_SIZE);
    }

    /// Queues an audio (8), video (9) or data (18) message of the published stream.
    pub(crate) fn queue_media(&mut self, type_id: u8, timestamp: u32, payload: &[u8]) {
        let csid = match type_id {
            kind::AUDIO => csid::AUDIO,
            kind::VIDEO => csid::VIDEO,
            _ => csid::DATA,
        };
        self.queue(csid, (type_id, self.stream_id, timestamp), payload);
    }

    /// Bytes queued and not yet sent.
    pub(crate) fn unsent(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Lets queued media wait for [`send_held`](Self::send_held) (`true`), or has every write send at once.
    pub(crate) fn hold(&mut self, held: bool) {
        self.held = held;
        self.held_since = None;
    }

    /// Whether what is queued may wait for [`send_held`](Self::send_held) rather than leave now.
    pub(crate) fn may_wait(&mut self) -> bool {
        if !self.held || self.unsent() >= HOLD_AT_MOST_BYTES {
            return false;
        }
        let since = *self.held_since.get_or_insert_with(Instant::now);
        since.elapsed() < HOLD_AT_MOST
    }

    /// Where sending stands: for latency measured to the moment a packet left.
    pub(crate) fn progress(&self) -> Progress {
        Progress { unsent: self.unsent(), emptied: self.emptied, emptied_at: self.emptied_at }
    }

    /// Sends everything queued, waiting while the socket is full (and reading the server meanwhile); every so
    /// often also reads what the server sent.
    pub(crate) fn send(&mut self) -> Result<(), RtmpError> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        while self.sent < self.out.len() {
            match (&self.socket).write(&self.out[self.sent..]) {
                Ok(0) => return Err(RtmpError::Closed),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let ready =
                        net::wait_for(self.socket.as_raw_fd(), libc::POLLOUT | libc::POLLIN, &self.interrupter)?;
                    if ready & libc::POLLIN != 0 {
                        self.read_incoming()?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.sent_all()
    }

    /// Sends held media: everything queued, waiting as a write does. A failure is kept for the next
    /// [`send`](Self::send) to report: the writer's caller, not the reader that calls this, owns the output's
    /// errors.
    pub(crate) fn send_held(&mut self) {
        if self.failed.is_none()
            && let Err(error) = self.send()
        {
            self.failed = Some(error);
        }
    }

    /// Everything queued has left: empties the queue, and every so often reads what the server sent.
    fn sent_all(&mut self) -> Result<(), RtmpError> {
        let now = Instant::now();
        if !self.out.is_empty() {
            self.emptied += 1;
            self.emptied_at = now;
        }
        self.out.clear();
        self.sent = 0;
        self.held_since = None;
        if self.publishing && now >= self.next_incoming_check {
            self.next_incoming_check = now + INCOMING_EVERY;
            self.read_incoming()?;
        }
        Ok(())
    }

    /// Reads into `buf`, waiting for the server if nothing has come; at least one byte.
    fn receive_into(&mut self, buf: &mut [u8]) -> Result<usize, RtmpError> {
        loop {
            match (&self.socket).read(buf) {
                Ok(0) => return Err(RtmpError::Closed),
                Ok(n) => {
                    self.received += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    net::wait_for(self.socket.as_raw_fd(), libc::POLLIN, &self.interrupter)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Handles whatever the server has sent, without waiting.
    fn read_incoming(&mut self) -> Result<(), RtmpError> {
        let mut buf = [0u8; 4096];
        loop {
            match (&self.socket).read(&mut buf) {
                Ok(0) => return Err(RtmpError::Closed),
                Ok(n) => {
                    self.received += n as u64;
                    self.reader.push(&buf[..n]);
                    while let Some(message) = self.reader.next_message()? {
                        self.handle(&message)?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.acknowledge();
        Ok(())
    }

    /// The next message from the server, waiting for it; control messages are handled on the way.
    fn next_command(&mut self) -> Result<Vec<Value>, RtmpError> {
        loop {
            while let Some(message) = self.reader.next_message()? {
                if let Some(values) = self.handle(&message)? {
                    self.acknowledge();
                    return Ok(values);
                }
            }
            let mut buf = [0u8; 4096];
            let n = self.receive_into(&mut buf)?;
            self.reader.push(&buf[..n]);
        }
    }

    /// Handles one message of the server's: control messages are acted on, a command's values returned (and
    /// an error status, or an `_error` answer, returned as one).
    fn handle(&mut self, message: &Message) -> Result<Option<Vec<Value>>, RtmpError> {
        let be32 = |p: &[u8]| p.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        match message.type_id {
            kind::SET_CHUNK_SIZE => {
                let size = be32(&message.payload).ok_or_else(|| RtmpError::Protocol("short Set Chunk Size".into()))?;
                self.reader.set_chunk_size(size);
            }
            kind::WINDOW_ACK_SIZE => self.ack_window = u64::from(be32(&message.payload).unwrap_or(0)),
            // A ping request (event 6) is answered with a ping response (7) carrying its timestamp.
            kind::USER_CONTROL if message.payload.len() >= 6 && message.payload[..2] == [0, 6] => {
                let mut pong = vec![0, 7];
                pong.extend_from_slice(&message.payload[2..6]);
                self.queue(csid::CONTROL, (kind::USER_CONTROL, 0, 0), &pong);
                if !self.publishing {
                    self.send()?;
                }
                // While publishing it leaves with the next media.
            }
            kind::COMMAND | kind::AMF3_COMMAND => {
                // An AMF3 command is an AMF0 one behind a zero byte.
                let payload = match message.type_id {
                    kind::AMF3_COMMAND => message.payload.get(1..).unwrap_or_default(),
                    _ => &message.payload[..],
                };
                let values = amf::read_all(payload)?;
                let name = values.first().and_then(Value::as_str).unwrap_or_default();
                let status = values.get(3);
                let level = status.and_then(|s| s.get("level")).and_then(Value::as_str);
                if name == "_error" || (name == "onStatus" && level == Some("error")) {
                    return Err(RtmpError::Refused(amf::describe(&values[3.min(values.len())..])));
                }
                return Ok(Some(values));
            }
            // Acknowledgements, peer bandwidth, abort, data and anything else: nothing to do for a publisher.
            _ => {}
        }
        Ok(None)
    }

    /// Acknowledges what was received once the server's window is full.
    fn acknowledge(&mut self) {
        if self.ack_window > 0 && self.received - self.acknowledged >= self.ack_window {
            self.acknowledged = self.received;
            let sequence = (self.received & 0xffff_ffff) as u32;
            self.queue(csid::CONTROL, (kind::ACKNOWLEDGEMENT, 0, 0), &sequence.to_be_bytes());
        }
    }

    /// Waits for the `_result` of `transaction`; its values.
    fn await_result(&mut self, transaction: f64) -> Result<Vec<Value>, RtmpError> {
        loop {
            let values = self.next_command()?;
            let name = values.first().and_then(Value::as_str);
            let number = values.get(1).and_then(Value::as_number);
            if name == Some("_result") && number == Some(transaction) {
                return Ok(values);
            }
            self.send()?; // a pong, an acknowledgement
        }
    }

    /// Waits for the status that says the stream is being published.
    fn await_publish_start(&mut self) -> Result<(), RtmpError> {
        loop {
            let values = self.next_command()?;
            let code = values.get(3).and_then(|s| s.get("code")).and_then(Value::as_str);
            if values.first().and_then(Value::as_str) == Some("onStatus") && code == Some("NetStream.Publish.Start") {
                return Ok(());
            }
            self.send()?;
        }
    }
}

impl Drop for Session {
    /// Tells the server the stream ends, without waiting: a stopping thread must not, and a server that cannot
    /// take a few bytes now sees the connection close instead.
    fn drop(&mut self) {
        if !self.publishing {
            return;
        }
        let playpath = self.playpath.clone();
        let stream_id = f64::from(self.stream_id);
        self.command("FCUnpublish", |body| {
            amf::put_null(body);
            amf::put_string(body, &playpath);
        });
        self.command("deleteStream", |body| {
            amf::put_null(body);
            amf::put_number(body, stream_id);
        });
        let _ = (&self.socket).write(&self.out[self.sent..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Result<(String, String, String), String> {
        Target::parse(url).map(|t| (t.app, t.playpath, t.tc_url)).map_err(|e| e.to_string())
    }

    #[test]
    fn urls_are_read_as_ffmpeg_reads_them() {
        let ok = |app: &str, playpath: &str, tc: &str| Ok((app.to_owned(), playpath.to_owned(), tc.to_owned()));
        assert_eq!(target("rtmp://srs/live/livestream7"), ok("live", "livestream7", "rtmp://srs:1935/live"));
        assert_eq!(
            target("rtmp://127.0.0.1:1936/live/cam?secret=abc"),
            ok("live", "cam?secret=abc", "rtmp://127.0.0.1:1936/live")
        );
        assert_eq!(target("rtmp://h/app/instance/cam"), ok("app/instance", "cam", "rtmp://h:1935/app/instance"));
        assert_eq!(target("rtmp://h/live/cam.flv"), ok("live", "cam", "rtmp://h:1935/live"));
        assert_eq!(target("rtmp://[::1]/live/cam"), ok("live", "cam", "rtmp://[::1]:1935/live"));
    }

    #[test]
    fn what_only_libavformat_does_is_left_to_it() {
        for url in [
            "rtmps://h/live/cam",
            "rtmp://user:pass@h/live/cam",
            "rtmp://h/cam",
            "rtmp://h/live/",
            "rtmp://h/live/mp4:cam",
            "rtmp://h/live/cam.mp4",
            "rtmp://h/live/cam#x",
        ] {
            assert!(matches!(Target::parse(url), Err(RtmpError::Unsupported(_))), "{url}");
        }
    }
}
