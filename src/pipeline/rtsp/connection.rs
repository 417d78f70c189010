//! One RTSP session over one TCP connection, with RTP interleaved on it: the handshake (OPTIONS, DESCRIBE,
//! SETUP per media, PLAY, answering a 401 on the way), then packets one at a time out of large reads, with
//! keep-alives when due and a TEARDOWN at the end.
//!
//! Every wait is interruptible (`pipeline::net`): a stop's signal (`runtime::wake`) ends it at once.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::auth::{self, Challenge, Credentials};
use super::framing::{self, Framer, FramingError, Item};
use super::sdp::{self, SdpError};
use crate::pipeline::held_sends::HeldSends;
use crate::pipeline::interrupt::Interrupter;
use crate::pipeline::net::{self, NetError};
use crate::pipeline::rtmp::Outbox;

/// The session timeout when the camera names none (RFC 2326 §12.37).
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many media sections are set up (two interleaved channels each).
const MAX_MEDIA: usize = 8;

/// Why the session failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RtspError {
    /// The interrupter fired: a stop, a fence, or the operation's deadline.
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the camera closed the connection")]
    Closed,
    /// A request was answered with an error status; worded as FFmpeg words it.
    #[error("method {method} failed: {status} {reason}")]
    Status { method: &'static str, status: u16, reason: String },
    #[error("{0}")]
    Framing(#[from] FramingError),
    #[error("{0}")]
    Sdp(#[from] SdpError),
    #[error("{0}")]
    Protocol(String),
    /// Something this reader leaves to libavformat's (a redirect, shared payload types …).
    #[error("{0}")]
    Unsupported(String),
}

impl From<NetError> for RtspError {
    fn from(error: NetError) -> RtspError {
        match error {
            NetError::Interrupted => RtspError::Interrupted,
            NetError::Io(e) => RtspError::Io(e),
        }
    }
}

impl RtspError {
    /// The FFmpeg error libavformat's own reader gives for the same failure, so that diagnosis and retries see
    /// one kind of error whichever reader ran.
    pub(crate) fn to_ffmpeg(&self) -> ffmpeg_next::Error {
        use ffmpeg_next::Error;
        match self {
            RtspError::Interrupted => Error::Exit,
            RtspError::Io(e) => Error::Other { errno: e.raw_os_error().unwrap_or(libc::EIO) },
            RtspError::Closed => Error::Eof,
            RtspError::Status { status, .. } => match status {
                400 => Error::HttpBadRequest,
                401 => Error::HttpUnauthorized,
                403 => Error::HttpForbidden,
                404 => Error::HttpNotFound,
                461 => Error::Other { errno: libc::EPROTONOSUPPORT },
                400..=499 => Error::HttpOther4xx,
                500..=599 => Error::HttpServerError,
                _ => Error::InvalidData,
            },
            RtspError::Framing(_) | RtspError::Sdp(_) | RtspError::Protocol(_) => Error::InvalidData,
            RtspError::Unsupported(_) => Error::PatchWelcome,
        }
    }
}

/// An answer to a request.
struct Response {
    status: u16,
    reason: String,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        framing::header(self.head.as_bytes(), name)
    }
}

/// Where a channel's packets go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// RTP, or RTCP of a media whose SSRC libavformat knows: handed on.
    Forward,
    /// RTCP of a media whose SSRC is unknown: libavformat could not place it.
    Drop,
}

/// A playing session: what libavformat is given, and the connection its packets come from.
pub(crate) struct Connection {
    socket: TcpStream,
    framer: Framer,
    /// The camera's URL without credentials: the request URI of OPTIONS, DESCRIBE, PLAY …
    url: String,
    credentials: Option<Credentials>,
    challenge: Option<Challenge>,
    /// Requests answered with the current challenge (Digest's `nc`).
    answered: u32,
    cseq: u32,
    session: Option<String>,
    /// GET_PARAMETER when the camera lists it, else OPTIONS (as libavformat chooses).
    keepalive_method: &'static str,
    keepalive_every: Duration,
    next_keepalive: Instant,
    interrupter: Arc<Interrupter>,
    /// Whether the last read emptied the socket: then the next one waits first.
    drained: bool,
    /// How long to let the camera's packets gather before waiting on an emptied socket (`pipeline::read_batch`);
    /// zero: wait for the next packet at once.
    linger: Duration,
    /// The outputs whose media waits until this reader is about to wait (`pipeline::held_sends`).
    held: HeldSends,
    /// Indexed by interleaved channel.
    routes: Vec<Option<Route>>,
}

impl Connection {
    /// Connects to `url` (an `rtsp://` URL whose host the caller has settled) and plays it: returns the
    /// connection and the session description to hand libavformat.
    pub(crate) fn play(url: &str, interrupter: &Arc<Interrupter>) -> Result<(Connection, Vec<u8>), RtspError> {
        let parsed = ::url::Url::parse(url).map_err(|e| RtspError::Protocol(format!("unreadable URL: {e}")))?;
        let host = parsed.host_str().ok_or_else(|| RtspError::Protocol("the URL has no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = parsed.port().unwrap_or(554);
        let address = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| RtspError::Protocol(format!("{host} resolves to nothing")))?;
        let credentials = Credentials::from_url(&parsed);
        let mut bare = parsed.clone();
        // Setting an empty user name and no password on an rtsp URL cannot fail.
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        let socket = net::connect(address, interrupter)?;
        let mut connection = Connection {
            socket,
            framer: Framer::new(),
            url: bare.to_string(),
            credentials,
            challenge: None,
            answered: 0,
            cseq: 0,
            session: None,
            keepalive_method: "OPTIONS",
            keepalive_every: DEFAULT_SESSION_TIMEOUT / 2,
            next_keepalive: Instant::now(),
            interrupter: Arc::clone(interrupter),
            drained: true,
            linger: Duration::ZERO,
            held: HeldSends::default(),
            routes: Vec::new(),
        };
        let sdp = connection.handshake()?;
        Ok((connection, sdp))
    }

    /// Lets the camera's packets gather for `linger` whenever a read finds the socket empty; zero stops it.
    pub(crate) fn set_linger(&mut self, linger: Duration) {
        self.linger = linger;
    }

    /// Holds `outbox`'s media until this reader is about to wait (`pipeline::held_sends`).
    pub(crate) fn hold_sends(&mut self, outbox: &Outbox) {
        self.held.hold(outbox);
    }

    fn handshake(&mut self) -> Result<Vec<u8>, RtspError> {
        let url = self.url.clone();
        let options = self.request("OPTIONS", &url, &[])?;
        if options.header("public").is_some_and(|p| p.split(',').any(|m| m.trim() == "GET_PARAMETER")) {
            self.keepalive_method = "GET_PARAMETER";
        }
        let described = self.request("DESCRIBE", &url, &[("Accept", "application/sdp")])?;
        // Relative control URLs are relative to Content-Base, else Content-Location, else the request URI.
        let base = described
            .header("content-base")
            .or_else(|| described.header("content-location"))
            .map_or_else(|| url.clone(), str::to_owned);
        let description = sdp::parse(&described.body)?;
        if description.media.len() > MAX_MEDIA {
            return Err(RtspError::Unsupported(format!("{} media sections", description.media.len())));
        }
        let mut payload_types: Vec<u8> = description.media.iter().map(|m| m.payload_types[0]).collect();
        payload_types.sort_unstable();
        if payload_types.windows(2).any(|w| w[0] == w[1]) {
            // libavformat tells custom-I/O packets apart by payload type only.
            return Err(RtspError::Unsupported("two media sections share a payload type".into()));
        }
        let mut ssrcs = Vec::with_capacity(description.media.len());
        for (index, media) in description.media.iter().enumerate() {
            let control = control_url(&base, description.control.as_deref(), media.control.as_deref());
            let wanted = format!("RTP/AVP/TCP;unicast;interleaved={}-{}", 2 * index, 2 * index + 1);
            let setup = self.request("SETUP", &control, &[("Transport", &wanted)])?;
            let session = setup
                .header("session")
                .ok_or_else(|| RtspError::Protocol("SETUP answered without a Session".into()))?;
            let mut parts = session.split(';');
            let id = parts.next().unwrap_or_default().trim().to_owned();
            if let Some(timeout) = parts.filter_map(|p| p.trim().strip_prefix("timeout=")).next() {
                let seconds = timeout.trim().parse::<u64>().unwrap_or(60).clamp(2, 3600);
                self.keepalive_every = Duration::from_secs(seconds) / 2;
            }
            self.session = Some(id);
            let transport = setup.header("transport").unwrap_or_default().to_owned();
            let (rtp, rtcp) = interleaved_channels(&transport).unwrap_or((2 * index as u8, 2 * index as u8 + 1));
            let ssrc = transport_ssrc(&transport);
            ssrcs.push(ssrc);
            self.route(rtp, Route::Forward);
            self.route(rtcp, if ssrc.is_some() || description.media.len() == 1 { Route::Forward } else { Route::Drop });
        }
        let play_url = match description.control.as_deref() {
            Some(control) if control != "*" => control_url(&base, None, Some(control)),
            _ => base.clone(),
        };
        self.request("PLAY", &play_url, &[("Range", "npt=0.000-")])?;
        self.next_keepalive = Instant::now() + self.keepalive_every;
        Ok(sdp::with_ssrcs(&described.body, &ssrcs))
    }

    fn route(&mut self, channel: u8, route: Route) {
        let channel = usize::from(channel);
        if self.routes.len() <= channel {
            self.routes.resize(channel + 1, None);
        }
        self.routes[channel] = Some(route);
    }

    /// The next RTP or RTCP packet into `out`; its length.
    pub(crate) fn read_packet(&mut self, out: &mut [u8]) -> Result<usize, RtspError> {
        loop {
            match self.framer.next_item()? {
                Some(Item::Data { channel, payload }) => {
                    if self.routes.get(usize::from(channel)).copied().flatten() != Some(Route::Forward) {
                        continue;
                    }
                    if payload.len() > out.len() {
                        return Err(RtspError::Protocol(format!(
                            "a {}-byte packet for a {}-byte buffer",
                            payload.len(),
                            out.len()
                        )));
                    }
                    out[..payload.len()].copy_from_slice(payload);
                    return Ok(payload.len());
                }
                // Answers to keep-alives, and requests of the camera's, which need nothing from us.
                Some(Item::Message { .. }) => continue,
                None => {
                    if Instant::now() >= self.next_keepalive {
                        self.keep_alive()?;
                    }
                    self.fill()?;
                }
            }
        }
    }

    /// Asks the camera to end the session, without waiting for its answer (a stopping thread must not).
    pub(crate) fn teardown(&mut self) {
        if self.session.is_none() {
            return;
        }
        let url = self.url.clone();
        let request = self.format_request("TEARDOWN", &url, &[]);
        // Non-blocking: a camera that cannot take a few bytes now simply times the session out.
        let _ = (&self.socket).write(request.as_bytes());
        self.session = None;
    }

    fn keep_alive(&mut self) -> Result<(), RtspError> {
        let url = self.url.clone();
        let request = self.format_request(self.keepalive_method, &url, &[]);
        self.send(request.as_bytes())?;
        self.next_keepalive = Instant::now() + self.keepalive_every;
        Ok(())
    }

    /// Sends a request and returns its answer, answering one 401 with the camera's challenge.
    fn request(&mut self, method: &'static str, uri: &str, headers: &[(&str, &str)]) -> Result<Response, RtspError> {
        let mut response = self.exchange(method, uri, headers)?;
        if response.status == 401 && self.credentials.is_some() && self.answered == 0 {
            let challenges: Vec<&str> = response
                .head
                .split("\r\n")
                .filter_map(|line| line.split_once(':'))
                .filter(|(key, _)| key.trim().eq_ignore_ascii_case("www-authenticate"))
                .map(|(_, value)| value.trim())
                .collect();
            self.challenge = auth::choose(challenges.into_iter());
            if self.challenge.is_some() {
                response = self.exchange(method, uri, headers)?;
            }
        }
        match response.status {
            200..=299 => Ok(response),
            301 | 302 | 303 | 305 | 307 => Err(RtspError::Unsupported(format!("{method} answered with a redirect"))),
            status => Err(RtspError::Status { method, status, reason: response.reason }),
        }
    }

    fn exchange(&mut self, method: &'static str, uri: &str, headers: &[(&str, &str)]) -> Result<Response, RtspError> {
        let request = self.format_request(method, uri, headers);
        self.send(request.as_bytes())?;
        let cseq = self.cseq;
        loop {
            let response = self.read_response()?;
            if response.header("cseq").and_then(|c| c.trim().parse::<u32>().ok()) == Some(cseq) {
                return Ok(response);
            }
        }
    }

    fn format_request(&mut self, method: &str, uri: &str, headers: &[(&str, &str)]) -> String {
        self.cseq += 1;
        let mut text = format!(
            "{method} {uri} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: camgate/{}\r\n",
            self.cseq,
            env!("CARGO_PKG_VERSION")
        );
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(session) = &self.session {
            text.push_str(&format!("Session: {session}\r\n"));
        }
        if let (Some(credentials), Some(challenge)) = (&self.credentials, &self.challenge) {
            self.answered += 1;
            let cnonce = format!("{:016x}", self.cnonce_seed());
            let value = auth::authorization(credentials, challenge, method, uri, self.answered, &cnonce);
            text.push_str(&format!("Authorization: {value}\r\n"));
        }
        text.push_str("\r\n");
        text
    }

    /// A client nonce that differs between requests and connections.
    fn cnonce_seed(&self) -> u128 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
            ^ u128::from(self.cseq)
    }

    /// Reads until a whole RTSP message is at the front of the buffer (skipping interleaved frames before it).
    fn read_response(&mut self) -> Result<Response, RtspError> {
        loop {
            match self.framer.next_item()? {
                Some(Item::Message { head, body }) => {
                    let head = String::from_utf8_lossy(head).into_owned();
                    let status_line = head.lines().next().unwrap_or_default();
                    let mut words = status_line.splitn(3, ' ');
                    let (Some(version), Some(code)) = (words.next(), words.next()) else { continue };
                    if !version.starts_with("RTSP/") {
                        // A request of the camera's: nothing to answer during the handshake.
                        continue;
                    }
                    let status = code
                        .parse::<u16>()
                        .map_err(|_| RtspError::Protocol(format!("unreadable status line {status_line:?}")))?;
                    let reason = words.next().unwrap_or_default().to_owned();
                    return Ok(Response { status, reason, body: body.to_vec(), head });
                }
                Some(Item::Data { .. }) => continue,
                None => self.fill()?,
            }
        }
    }

    /// Reads what the socket holds into the buffer, waiting first if the last read emptied it.
    fn fill(&mut self) -> Result<(), RtspError> {
        if self.drained {
            // Whatever the packets handled since the last wait made leaves now, in one send per output.
            self.held.send_held();
            if !self.linger.is_zero() && self.interrupter.check().is_none() {
                // Packets gather in the socket meanwhile, and the next read takes them all: the thread wakes
                // once a batch. Waiting in `poll` first would wake it for the camera's next packet too, only
                // for it to park after that one. A stop (or a warm camera's gate opening) unparks it; a stray
                // unpark only ends the batch early.
                std::thread::park_timeout(self.linger);
            }
            self.wait(libc::POLLIN)?;
        }
        let spare = self.framer.spare();
        let room = spare.len();
        if room == 0 {
            // Cannot happen with the framer's limits; a zero-length read would look like a closed socket.
            return Err(RtspError::Protocol("the receive buffer is full".into()));
        }
        match (&self.socket).read(spare) {
            Ok(0) => Err(RtspError::Closed),
            Ok(n) => {
                self.drained = n < room;
                self.framer.filled(n);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.drained = true;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn send(&mut self, mut bytes: &[u8]) -> Result<(), RtspError> {
        while !bytes.is_empty() {
            match (&self.socket).write(bytes) {
                Ok(0) => return Err(RtspError::Closed),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.wait(libc::POLLOUT)?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn wait(&self, events: i16) -> Result<(), RtspError> {
        net::wait_for(self.socket.as_raw_fd(), events, &self.interrupter)?;
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The URL a media section is set up at (as libavformat resolves it): an absolute control as it is, `*` or
/// none as the base, a relative one appended to the base with one `/`.
fn control_url(base: &str, session_control: Option<&str>, control: Option<&str>) -> String {
    let base = match session_control {
        Some(c) if c.starts_with("rtsp://") || c.starts_with("rtsps://") => c,
        _ => base,
    };
    match control {
        Some(c) if c.starts_with("rtsp://") || c.starts_with("rtsps://") => c.to_owned(),
        None | Some("*") | Some("") => base.to_owned(),
        Some(c) if base.ends_with('/') => format!("{base}{c}"),
        Some(c) => format!("{base}/{c}"),
    }
}

/// `interleaved=a-b` of a Transport header.
fn interleaved_channels(transport: &str) -> Option<(u8, u8)> {
    let value = transport.split(';').find_map(|p| p.trim().strip_prefix("interleaved="))?;
    let (a, b) = value.split_once('-').unwrap_or((value, ""));
    let a = a.trim().parse::<u8>().ok()?;
    let b = if b.is_empty() { a.checked_add(1)? } else { b.trim().parse::<u8>().ok()? };
    Some((a, b))
}

/// `ssrc=` of a Transport header (hexadecimal, RFC 2326 §12.39).
fn transport_ssrc(transport: &str) -> Option<u32> {
    let value = transport.split(';').find_map(|p| p.trim().strip_prefix("ssrc="))?;
    u32::from_str_radix(value.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_urls_resolve_as_libavformat_resolves_them() {
        let base = "rtsp://10.0.0.5:554/cam";
        assert_eq!(control_url(base, None, Some("trackID=1")), "rtsp://10.0.0.5:554/cam/trackID=1");
        assert_eq!(control_url("rtsp://h/cam/", None, Some("stream=0")), "rtsp://h/cam/stream=0");
        assert_eq!(control_url(base, None, Some("rtsp://h/other/1")), "rtsp://h/other/1");
        assert_eq!(control_url(base, None, Some("*")), base);
        assert_eq!(control_url(base, None, None), base);
        assert_eq!(control_url(base, Some("rtsp://h/agg"), Some("t1")), "rtsp://h/agg/t1");
        assert_eq!(control_url(base, Some("*"), Some("t1")), "rtsp://10.0.0.5:554/cam/t1");
    }

    #[test]
    fn transport_answers_are_read() {
        let answer = "RTP/AVP/TCP;unicast;interleaved=4-5;ssrc=1A2B3C4D;mode=\"PLAY\"";
        assert_eq!(interleaved_channels(answer), Some((4, 5)));
        assert_eq!(transport_ssrc(answer), Some(0x1A2B_3C4D));
        assert_eq!(interleaved_channels("RTP/AVP/TCP;interleaved=2"), Some((2, 3)));
        assert_eq!(interleaved_channels("RTP/AVP/TCP;interleaved=x-1"), None);
        assert_eq!(transport_ssrc("RTP/AVP/TCP;ssrc=zz"), None);
    }

    #[test]
    fn statuses_become_ffmpegs_errors() {
        let status = |status| RtspError::Status { method: "DESCRIBE", status, reason: String::new() }.to_ffmpeg();
        assert_eq!(status(401), ffmpeg_next::Error::HttpUnauthorized);
        assert_eq!(status(404), ffmpeg_next::Error::HttpNotFound);
        assert_eq!(status(454), ffmpeg_next::Error::HttpOther4xx);
        assert_eq!(status(461), ffmpeg_next::Error::Other { errno: libc::EPROTONOSUPPORT });
        assert_eq!(status(503), ffmpeg_next::Error::HttpServerError);
        assert_eq!(RtspError::Interrupted.to_ffmpeg(), ffmpeg_next::Error::Exit);
    }
}
