//! A camera server for a thousand sessions: it records a stretch of whole GOPs from a real camera (the GStreamer
//! fixture) over RTSP once, then plays that recording round and round to every client, as one live camera that
//! all of them share.
//!
//! Why it exists: the GStreamer server spends about 0.14 % of a core on every session it serves (BENCHMARKS.md,
//! "the edge again"), so on a two-core machine a thousand sessions of it would leave nothing for the system under
//! test. Here one sender thread writes each session's due packets once a tick, in one non-blocking `send`.
//!
//! What a client receives is what the camera sent: its SDP, its RTP payloads and its RTCP sender reports, with
//! the camera's pacing (each packet is due when it arrived while recording). Only the sequence numbers, the RTP
//! timestamps and the reports' NTP times move on by one recording's length each time round, so the stream runs
//! on without a seam: the recording starts at a keyframe and ends just before one, and its audio is cut on RTP
//! time to the same length (exactly, when the length is a whole number of audio packets: 8 s of 2 s GOPs and
//! 48 kHz AAC).
//!
//! RTSP over TCP only (RTP interleaved; a client asking for UDP is answered 461 and, like libavformat, retries
//! over TCP), any path, no authentication. A client that cannot keep up is dropped once 4 MiB wait for it.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A client is dropped when this much waits for it (a second of a 720p camera is about 100 KiB).
const MAX_PENDING: usize = 4 << 20;
/// How long recording may take beyond its length: the wait for the first keyframe and the last audio.
const RECORD_SLACK: Duration = Duration::from_secs(15);

/// How the replay records and plays.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// The recording lasts at least this long: from one keyframe to the first keyframe this far after it.
    pub length: Duration,
    /// The sender wakes this often and writes everything that fell due since, one `send` per client.
    pub tick: Duration,
}

impl Default for ReplayOptions {
    fn default() -> ReplayOptions {
        ReplayOptions { length: Duration::from_secs(8), tick: Duration::from_millis(10) }
    }
}

/// The server (see the module's doc). Stops when dropped: the sender and the listener end, every client is cut.
pub struct ReplayServer {
    port: u16,
    shared: Arc<Shared>,
    length: Duration,
    listening: Option<JoinHandle<()>>,
    sending: Option<JoinHandle<()>>,
}

/// What the listener, the connections and the sender share.
struct Shared {
    closed: AtomicBool,
    recording: Recording,
    /// Clients playing, each written by the sender.
    playing: Mutex<Vec<Arc<Outlet>>>,
    /// Clients dropped for not keeping up.
    dropped: AtomicUsize,
    /// Every client connected, by session number, so that stopping cuts them all (mid-handshake too).
    connections: Mutex<HashMap<u64, TcpStream>>,
}

impl ReplayServer {
    /// Records from `upstream` (`rtsp://host:port/path`, over TCP) and starts serving on a fresh loopback port.
    pub fn record(upstream: &str, options: ReplayOptions) -> Result<ReplayServer, String> {
        let recording = Recording::make(upstream, options.length)?;
        let length = recording.length;
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            closed: AtomicBool::new(false),
            recording,
            playing: Mutex::new(Vec::new()),
            dropped: AtomicUsize::new(0),
            connections: Mutex::new(HashMap::new()),
        });
        let listening = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("replay-listen-{port}"))
                .spawn(move || listen(&listener, &shared))
                .map_err(|e| format!("cannot start the replay's listener: {e}"))?
        };
        let sending = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("replay-send-{port}"))
                .spawn(move || send_loop(&shared, options.tick))
                .map_err(|e| format!("cannot start the replay's sender: {e}"))?
        };
        Ok(ReplayServer { port, shared, length, listening: Some(listening), sending: Some(sending) })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtsp://127.0.0.1:PORT/replay` (any path serves the same recording).
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/replay", self.port)
    }

    /// The recording's length: how often the stream goes round.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// Clients playing now.
    pub fn playing(&self) -> usize {
        self.shared.playing.lock().map_or(0, |p| p.len())
    }

    /// Clients connected now, playing or not.
    pub fn connections(&self) -> usize {
        self.shared.connections.lock().map_or(0, |c| c.len())
    }

    /// Clients dropped so far because they did not keep up.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        // No more connections once the listener has ended; then every one there is gets cut, which ends its
        // session's thread, and the sender finds nobody to write to.
        if let Some(listening) = self.listening.take() {
            let _ = listening.join();
        }
        if let Ok(connections) = self.shared.connections.lock() {
            for connection in connections.values() {
                let _ = connection.shutdown(Shutdown::Both);
            }
        }
        if let Ok(mut playing) = self.shared.playing.lock() {
            playing.clear();
        }
        if let Some(sending) = self.sending.take() {
            let _ = sending.join();
        }
    }
}

/// One recorded packet, as it arrived on its interleaved channel.
struct Packet {
    channel: u8,
    data: Vec<u8>,
    /// Which media section (stream) it belongs to.
    stream: usize,
    rtcp: bool,
    /// When in a round it is due: when it arrived, counted from the recording's start.
    due: Duration,
}

/// A camera's recording and how it repeats.
struct Recording {
    sdp: String,
    /// Each media section's control attribute and interleaved channel pair.
    streams: Vec<(String, u8)>,
    /// One round, in the order the packets are due.
    packets: Vec<Packet>,
    length: Duration,
    /// How far each stream's sequence numbers and RTP timestamps move on each round.
    seq_step: Vec<u16>,
    ts_step: Vec<u32>,
    /// The round's length in NTP units (1/2^32 s), for the sender reports.
    ntp_step: u64,
}

impl Recording {
    fn make(upstream: &str, length: Duration) -> Result<Recording, String> {
        let deadline = Instant::now() + length + RECORD_SLACK;
        let mut client = RecordingClient::connect(upstream)?;
        let Playing { sdp, media, streams, session } = client.play(upstream)?;
        let video = media.iter().position(|m| m.kind == "video").ok_or("the camera's SDP has no video")?;

        let stream_of =
            |channel: u8| streams.iter().position(|&(_, c)| c == channel || c.checked_add(1) == Some(channel));
        let video_channel = streams[video].1;
        let hevc = media[video].encoding.eq_ignore_ascii_case("H265");
        // Recorded from the first keyframe on; `start` is its arrival and RTP time.
        let mut start: Option<(Instant, u32)> = None;
        let mut end_ts: Option<u32> = None;
        // The video access unit being read: its RTP time, whether it is a keyframe's, where its first packet went
        // in `arrived` and, before the start, its packets so far.
        let mut unit: Option<u32> = None;
        let mut unit_is_key = false;
        let mut unit_from = 0;
        let mut unit_before_start: Vec<(Instant, Vec<u8>)> = Vec::new();
        let mut arrived: Vec<Packet> = Vec::new();
        let mut audio_done = media.iter().map(|m| m.kind == "video").collect::<Vec<_>>();
        let mut audio_first: Vec<Option<u32>> = vec![None; media.len()];
        let length_ts = |clock: u32, video_ts: u32| {
            (f64::from(video_ts) * f64::from(clock) / f64::from(media[video].clock)).round() as u32
        };
        loop {
            if Instant::now() > deadline {
                return Err(format!("recording {upstream}: no {length:?} of whole GOPs and audio in time"));
            }
            let (channel, data) = client.frame()?;
            let now = Instant::now();
            let Some(stream) = stream_of(channel) else { continue };
            let rtcp = channel != streams[stream].1;
            let ts = rtp_timestamp(&data);
            if !rtcp && channel == video_channel {
                let ts = ts.ok_or("a short video packet")?;
                if unit != Some(ts) {
                    (unit, unit_is_key, unit_from) = (Some(ts), false, arrived.len());
                    unit_before_start.clear();
                }
                if start.is_none() {
                    unit_before_start.push((now, data.clone()));
                }
                // The recording runs from the first packet of a keyframe's access unit (an SEI may come before
                // its parameter sets or slice) to the last before the first such unit `length` later.
                if !unit_is_key && keyframe_unit(&data, hevc) {
                    unit_is_key = true;
                    match start {
                        None => {
                            let t0 = unit_before_start.first().map_or(now, |&(at, _)| at);
                            start = Some((t0, ts));
                            for (at, data) in unit_before_start.drain(..) {
                                arrived.push(Packet { channel, data, stream, rtcp, due: at - t0 });
                            }
                            continue;
                        }
                        Some((_, first)) if end_ts.is_none() => {
                            let elapsed = ts.wrapping_sub(first);
                            if f64::from(elapsed) / f64::from(media[video].clock) >= length.as_secs_f64() - 0.001 {
                                end_ts = Some(elapsed);
                                // This unit's video so far belongs to the next round, not to this one.
                                let mut i = 0;
                                arrived.retain(|p| {
                                    i += 1;
                                    i <= unit_from || p.rtcp || p.stream != video
                                });
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
            let Some((t0, _)) = start else { continue };
            let packet = Packet { channel, data, stream, rtcp, due: now - t0 };
            if stream == video && !rtcp {
                if end_ts.is_none() {
                    arrived.push(packet);
                }
            } else if rtcp {
                if end_ts.is_none() && packet.data.get(1) == Some(&200) {
                    arrived.push(packet);
                }
            } else if !audio_done[stream] {
                let Some(ts) = ts else { continue };
                let first = *audio_first[stream].get_or_insert(ts);
                arrived.push(packet);
                // Kept until a packet past the video's length: the audio is cut on RTP time below.
                audio_done[stream] =
                    end_ts.is_some_and(|video_ts| ts.wrapping_sub(first) >= length_ts(media[stream].clock, video_ts));
            }
            if end_ts.is_some() && audio_done.iter().all(|&d| d) {
                break;
            }
        }
        let video_ts = end_ts.expect("the loop ends with the length known");
        if arrived.is_empty() {
            return Err(format!("recording {upstream}: nothing recorded"));
        }
        let length = Duration::from_secs_f64(f64::from(video_ts) / f64::from(media[video].clock));
        // Audio beyond the length goes (it would repeat in the next round).
        arrived.retain(|p| {
            p.rtcp || p.stream == video || {
                let (Some(first), Some(ts)) = (audio_first[p.stream], rtp_timestamp(&p.data)) else { return false };
                ts.wrapping_sub(first) < length_ts(media[p.stream].clock, video_ts)
            }
        });
        let mut seq_step = vec![0u16; media.len()];
        for p in arrived.iter().filter(|p| !p.rtcp) {
            seq_step[p.stream] = seq_step[p.stream].wrapping_add(1);
        }
        let ts_step = media.iter().map(|m| length_ts(m.clock, video_ts)).collect();
        let ntp_step = ((u128::from(video_ts) << 32) / u128::from(media[video].clock)) as u64;
        // Due when it arrived, so in arrival order. What arrived after the round's length (the last audio, cut on
        // RTP time; video behind its clock) is due at the round's end, still before the next round's start:
        // a stream's packets must leave in order.
        let last = length.saturating_sub(Duration::from_micros(1));
        for p in &mut arrived {
            p.due = p.due.min(last);
        }
        let _ = client.request("TEARDOWN", upstream, &[&format!("Session: {session}")]);
        Ok(Recording { sdp, streams, packets: arrived, length, seq_step, ts_step, ntp_step })
    }

    /// Appends packet `i` as it reads in round `round`, framed for its interleaved channel.
    fn write_packet(&self, i: usize, round: u64, out: &mut Vec<u8>) {
        let p = &self.packets[i];
        let at = out.len() + 4;
        out.push(b'$');
        out.push(p.channel);
        out.extend_from_slice(&(p.data.len() as u16).to_be_bytes());
        out.extend_from_slice(&p.data);
        let data = &mut out[at..];
        let ts_add = (round as u32).wrapping_mul(self.ts_step[p.stream]);
        if p.rtcp {
            // A sender report: NTP time at 8..16, RTP time at 16..20.
            if data.len() >= 20 {
                let ntp = u64::from_be_bytes(data[8..16].try_into().expect("8 bytes"));
                data[8..16].copy_from_slice(&ntp.wrapping_add(round.wrapping_mul(self.ntp_step)).to_be_bytes());
                add_u32(&mut data[16..20], ts_add);
            }
        } else if data.len() >= 8 {
            let seq = u16::from_be_bytes([data[2], data[3]]);
            let seq = seq.wrapping_add((round as u16).wrapping_mul(self.seq_step[p.stream]));
            data[2..4].copy_from_slice(&seq.to_be_bytes());
            add_u32(&mut data[4..8], ts_add);
        }
    }
}

fn add_u32(field: &mut [u8], add: u32) {
    let value = u32::from_be_bytes(field[..4].try_into().expect("4 bytes"));
    field[..4].copy_from_slice(&value.wrapping_add(add).to_be_bytes());
}

fn join(base: &str, control: &str) -> String {
    if base.ends_with('/') { format!("{base}{control}") } else { format!("{base}/{control}") }
}

/// An RTP packet's timestamp.
fn rtp_timestamp(data: &[u8]) -> Option<u32> {
    data.get(4..8).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether an RTP packet carries a keyframe's parameter sets or the start of its slice: the first NAL unit in it
/// (alone, first of an aggregate, or the first fragment of a fragmented one) is a parameter set or an IDR slice
/// (H.264), a parameter set or an IRAP slice — IDR, CRA, BLA (H.265).
fn keyframe_unit(data: &[u8], hevc: bool) -> bool {
    let Some(&first) = data.first() else { return false };
    let csrc = usize::from(first & 0x0f);
    let mut at = 12 + 4 * csrc;
    if first & 0x10 != 0 {
        let Some(words) = data.get(at + 2..at + 4) else { return false };
        at += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let Some(payload) = data.get(at..) else { return false };
    if hevc {
        let key = |kind: u8| matches!(kind, 16..=23 | 32..=34);
        match payload.first().map(|&b| (b >> 1) & 0x3f) {
            // An aggregation packet: two header bytes, then a 16-bit size before each unit.
            Some(48) => payload.get(4).is_some_and(|&b| key((b >> 1) & 0x3f)),
            // A fragmentation unit: two header bytes, then its own, with the start bit and the unit's type.
            Some(49) => payload.get(2).is_some_and(|&h| h & 0x80 != 0 && key(h & 0x3f)),
            Some(kind) => key(kind),
            None => false,
        }
    } else {
        let key = |kind: u8| matches!(kind, 5 | 7 | 8);
        match payload.first().map(|&b| b & 0x1f) {
            // STAP-A: one header byte, then a 16-bit size before each unit.
            Some(24) => payload.get(3).is_some_and(|&b| key(b & 0x1f)),
            // FU-A: the indicator, then a header with the start bit and the unit's type.
            Some(28) => payload.get(1).is_some_and(|&h| h & 0x80 != 0 && key(h & 0x1f)),
            Some(kind) => key(kind),
            None => false,
        }
    }
}

/// A media section of an SDP: its kind, control attribute, first payload type's encoding and clock rate.
struct Media {
    kind: String,
    control: String,
    encoding: String,
    clock: u32,
}

impl Media {
    fn parse(sdp: &str) -> Vec<Media> {
        let mut media: Vec<Media> = Vec::new();
        for line in sdp.lines().map(str::trim) {
            if let Some(m) = line.strip_prefix("m=") {
                let kind = m.split(' ').next().unwrap_or_default().to_owned();
                media.push(Media { kind, control: String::new(), encoding: String::new(), clock: 90_000 });
            } else if let Some(m) = media.last_mut() {
                if let Some(control) = line.strip_prefix("a=control:") {
                    m.control = control.to_owned();
                } else if let Some(map) = line.strip_prefix("a=rtpmap:")
                    && m.encoding.is_empty()
                {
                    // `a=rtpmap:96 H264/90000`
                    let format = map.split(' ').nth(1).unwrap_or_default();
                    let mut parts = format.split('/');
                    m.encoding = parts.next().unwrap_or_default().to_owned();
                    m.clock = parts.next().and_then(|c| c.parse().ok()).filter(|&c| c > 0).unwrap_or(90_000);
                }
            }
        }
        media
    }
}

/// An RTSP answer: status, headers (names lowercased) and body.
struct Answer {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// The recorder's side of the camera's RTSP session.
struct RecordingClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    cseq: u32,
}

/// A session set up and playing: the camera's SDP, its media sections, and their controls and channels.
struct Playing {
    sdp: String,
    media: Vec<Media>,
    streams: Vec<(String, u8)>,
    session: String,
}

/// Plays `url` over TCP for `within` and returns every RTP packet's interleaved channel, sequence number and
/// timestamp, in the order they came: what a client receives, read without libavformat (which does not look at
/// sequence numbers over TCP).
pub fn rtp_headers(url: &str, within: Duration) -> Result<Vec<(u8, u16, u32)>, String> {
    let mut client = RecordingClient::connect(url)?;
    let Playing { streams, .. } = client.play(url)?;
    let until = Instant::now() + within;
    let mut out = Vec::new();
    while Instant::now() < until {
        let (channel, data) = client.frame()?;
        if streams.iter().any(|&(_, c)| c == channel)
            && let (Some(seq), Some(ts)) = (data.get(2..4), rtp_timestamp(&data))
        {
            out.push((channel, u16::from_be_bytes([seq[0], seq[1]]), ts));
        }
    }
    Ok(out)
}

impl RecordingClient {
    /// DESCRIBE, SETUP of every media section (interleaved over this connection), PLAY.
    fn play(&mut self, url: &str) -> Result<Playing, String> {
        let describe = self.request("DESCRIBE", url, &["Accept: application/sdp"])?;
        let sdp = String::from_utf8(describe.body).map_err(|_| "the camera's SDP is not UTF-8".to_string())?;
        let base = describe.headers.get("content-base").cloned().unwrap_or_else(|| format!("{url}/"));
        let media = Media::parse(&sdp);
        let mut session = String::new();
        let mut streams = Vec::new();
        for (i, m) in media.iter().enumerate() {
            let control = if m.control.starts_with("rtsp://") { m.control.clone() } else { join(&base, &m.control) };
            let transport = format!("Transport: RTP/AVP/TCP;unicast;interleaved={}-{}", 2 * i, 2 * i + 1);
            let session_header = format!("Session: {session}");
            let mut headers = vec![transport.as_str()];
            if !session.is_empty() {
                headers.push(&session_header);
            }
            let setup = self.request("SETUP", &control, &headers)?;
            let channel = setup
                .headers
                .get("transport")
                .and_then(|t| t.split(';').find_map(|p| p.trim().strip_prefix("interleaved=")))
                .and_then(|c| c.split('-').next()?.parse().ok())
                .ok_or("SETUP answered without interleaved channels")?;
            if session.is_empty() {
                let id = setup.headers.get("session").ok_or("SETUP answered without a Session")?;
                session = id.split(';').next().unwrap_or_default().trim().to_owned();
            }
            streams.push((m.control.clone(), channel));
        }
        self.request("PLAY", url, &[&format!("Session: {session}")])?;
        Ok(Playing { sdp, media, streams, session })
    }

    fn connect(url: &str) -> Result<RecordingClient, String> {
        let rest = url.strip_prefix("rtsp://").ok_or_else(|| format!("{url}: not rtsp://"))?;
        let host = rest.split('/').next().unwrap_or_default();
        let stream = TcpStream::connect(host).map_err(|e| format!("connecting to {host}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(RecordingClient { reader: BufReader::new(stream), writer, cseq: 0 })
    }

    fn request(&mut self, method: &str, url: &str, headers: &[&str]) -> Result<Answer, String> {
        self.cseq += 1;
        let mut text = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\nUser-Agent: camgate-replay\r\n", self.cseq);
        for h in headers {
            text.push_str(h);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        self.writer.write_all(text.as_bytes()).map_err(|e| format!("{method}: {e}"))?;
        loop {
            if self.peek()? == b'$' {
                self.frame()?;
                continue;
            }
            let (start, headers) = read_head(&mut self.reader).map_err(|e| format!("{method}: {e}"))?;
            let body = read_body(&mut self.reader, &headers).map_err(|e| format!("{method}: {e}"))?;
            if !start.contains(" 200 ") {
                return Err(format!("{method} {url}: {start}"));
            }
            return Ok(Answer { headers, body });
        }
    }

    fn peek(&mut self) -> Result<u8, String> {
        let buf = self.reader.fill_buf().map_err(|e| e.to_string())?;
        buf.first().copied().ok_or_else(|| "the camera closed the connection".to_string())
    }

    /// The next interleaved frame: channel and data (RTSP messages between frames are skipped).
    fn frame(&mut self) -> Result<(u8, Vec<u8>), String> {
        loop {
            if self.peek()? != b'$' {
                let (_, headers) = read_head(&mut self.reader).map_err(|e| e.to_string())?;
                read_body(&mut self.reader, &headers).map_err(|e| e.to_string())?;
                continue;
            }
            let mut head = [0u8; 4];
            self.reader.read_exact(&mut head).map_err(|e| e.to_string())?;
            let mut data = vec![0u8; usize::from(u16::from_be_bytes([head[2], head[3]]))];
            self.reader.read_exact(&mut data).map_err(|e| e.to_string())?;
            return Ok((head[1], data));
        }
    }
}

/// An RTSP message's start line and headers (names lowercased), at most 16 KiB of them.
fn read_head(reader: &mut impl BufRead) -> io::Result<(String, HashMap<String, String>)> {
    const MAX_HEAD: u64 = 16 * 1024;
    let too_long = || io::Error::new(io::ErrorKind::InvalidData, "an RTSP message head over 16 KiB");
    let mut left = MAX_HEAD;
    // One line, never more than what is left of the limit (a line without an end must not grow without one).
    let mut line = |left: &mut u64| -> io::Result<String> {
        let mut line = String::new();
        let n = reader.by_ref().take(*left).read_line(&mut line)? as u64;
        *left -= n;
        if n == 0 || !line.ends_with('\n') {
            return Err(if *left == 0 { too_long() } else { io::ErrorKind::UnexpectedEof.into() });
        }
        Ok(line)
    };
    let start = line(&mut left)?;
    let mut headers = HashMap::new();
    loop {
        let line = line(&mut left)?;
        let line = line.trim_end();
        if line.is_empty() {
            return Ok((start.trim_end().to_owned(), headers));
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
}

fn read_body(reader: &mut impl Read, headers: &HashMap<String, String>) -> io::Result<Vec<u8>> {
    let size: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    if size > 64 * 1024 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "an RTSP body over 64 KiB"));
    }
    let mut body = vec![0u8; size];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// A playing client as the sender sees it: its socket, and what could not be written yet.
struct Outlet {
    stream: TcpStream,
    pending: Mutex<Vec<u8>>,
    closed: AtomicBool,
}

impl Outlet {
    /// Writes `bytes` after whatever waits, without blocking; false once the client is gone or dropped.
    fn send(&self, bytes: &[u8], dropped: &AtomicUsize) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(mut pending) = self.pending.lock() else { return false };
        let socket = socket2::SockRef::from(&self.stream);
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        let try_send = |buf: &[u8]| match socket.send_with_flags(buf, flags) {
            Ok(n) => Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(0),
            Err(_) => None,
        };
        let written = if pending.is_empty() {
            try_send(bytes).map(|n| pending.extend_from_slice(&bytes[n..]))
        } else {
            pending.extend_from_slice(bytes);
            try_send(&pending).map(|n| {
                pending.drain(..n);
            })
        };
        if written.is_none() {
            self.close();
            return false;
        }
        if pending.len() > MAX_PENDING {
            dropped.fetch_add(1, Ordering::SeqCst);
            self.close();
            return false;
        }
        true
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn listen(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut sessions = 0u64;
    while !shared.closed.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                sessions += 1;
                let id = sessions;
                let (Ok(kept), Ok(mut connections)) = (client.try_clone(), shared.connections.lock()) else { continue };
                connections.insert(id, kept);
                drop(connections);
                let shared = Arc::clone(shared);
                // Small stacks: a thousand of these wait in `read` for the odd keep-alive.
                let _ = thread::Builder::new().name("replay-session".into()).stack_size(128 * 1024).spawn(move || {
                    let _ = client.set_nonblocking(false);
                    let _ = client.set_nodelay(true);
                    serve(client, id, &shared);
                    if let Ok(mut connections) = shared.connections.lock() {
                        connections.remove(&id);
                    }
                });
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// One client's RTSP session: the handshake, then keep-alives and TEARDOWN while the sender writes its media.
fn serve(client: TcpStream, id: u64, shared: &Shared) {
    let Ok(writer) = client.try_clone() else { return };
    let mut reader = BufReader::new(client);
    let session = format!("{id:08X}");
    let mut outlet: Option<Arc<Outlet>> = None;
    let mut direct = Some(writer);
    let recording = &shared.recording;
    // The client's RTCP receiver reports come interleaved; they are read and let go.
    while let Ok(buf) = reader.fill_buf() {
        match buf.first() {
            None => break,
            Some(b'$') => {
                let mut head = [0u8; 4];
                if reader.read_exact(&mut head).is_err() {
                    break;
                }
                let mut skip = vec![0u8; usize::from(u16::from_be_bytes([head[2], head[3]]))];
                if reader.read_exact(&mut skip).is_err() {
                    break;
                }
                continue;
            }
            Some(_) => {}
        }
        let Ok((start, headers)) = read_head(&mut reader) else { break };
        if read_body(&mut reader, &headers).is_err() {
            break;
        }
        let mut parts = start.split(' ');
        let (method, url) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let cseq = headers.get("cseq").cloned().unwrap_or_default();
        let mut status = "200 OK";
        let mut extra = String::new();
        let mut body = String::new();
        let mut play = false;
        match method {
            "OPTIONS" => extra.push_str("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n"),
            "DESCRIBE" => {
                let base = if url.ends_with('/') { url.to_owned() } else { format!("{url}/") };
                extra.push_str(&format!("Content-Base: {base}\r\nContent-Type: application/sdp\r\n"));
                body = recording.sdp.clone();
            }
            "SETUP" => {
                let transport = headers.get("transport").map(String::as_str).unwrap_or_default();
                let stream = recording
                    .streams
                    .iter()
                    .enumerate()
                    .filter(|(_, (control, _))| !control.is_empty() && url.ends_with(control.as_str()))
                    .max_by_key(|(_, (control, _))| control.len())
                    .map(|(i, _)| i);
                match stream {
                    None => status = "404 Not Found",
                    Some(_) if !transport.contains("TCP") => status = "461 Unsupported Transport",
                    Some(i) => {
                        let channel = recording.streams[i].1;
                        extra.push_str(&format!(
                            "Transport: RTP/AVP/TCP;unicast;interleaved={}-{}\r\nSession: {session};timeout=60\r\n",
                            channel,
                            u16::from(channel) + 1
                        ));
                    }
                }
            }
            "PLAY" => {
                extra.push_str(&format!("Session: {session}\r\nRange: npt=now-\r\n"));
                play = outlet.is_none();
            }
            "GET_PARAMETER" | "SET_PARAMETER" => extra.push_str(&format!("Session: {session}\r\n")),
            "TEARDOWN" => {}
            _ => status = "405 Method Not Allowed",
        }
        let answer = format!(
            "RTSP/1.0 {status}\r\nCSeq: {cseq}\r\nServer: camgate-replay\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sent = match (&mut direct, &outlet) {
            (Some(writer), _) => writer.write_all(answer.as_bytes()).is_ok(),
            (None, Some(outlet)) => outlet.send(answer.as_bytes(), &shared.dropped),
            (None, None) => false,
        };
        if !sent || method == "TEARDOWN" {
            break;
        }
        if play && let Some(writer) = direct.take() {
            // From here the sender writes to this client, answers included, so nothing interleaves mid-frame.
            let new =
                Arc::new(Outlet { stream: writer, pending: Mutex::new(Vec::new()), closed: AtomicBool::new(false) });
            if let Ok(mut playing) = shared.playing.lock() {
                playing.push(Arc::clone(&new));
            }
            outlet = Some(new);
        }
    }
    match outlet {
        Some(outlet) => outlet.close(),
        None => {
            if let Some(writer) = direct {
                let _ = writer.shutdown(Shutdown::Both);
            }
        }
    }
}

/// The sender: each tick, everything that fell due since the last, to every playing client.
fn send_loop(shared: &Shared, tick: Duration) {
    let recording = &shared.recording;
    let started = Instant::now();
    let (mut round, mut next) = (0u64, 0usize);
    let mut batch = Vec::with_capacity(256 * 1024);
    let mut wake = started;
    while !shared.closed.load(Ordering::Relaxed) {
        wake += tick;
        let now = Instant::now();
        match wake.checked_duration_since(now) {
            Some(wait) => thread::sleep(wait),
            // Behind (a busy machine): catch up from now on rather than in a burst of ticks.
            None => wake = now,
        }
        let elapsed = started.elapsed();
        batch.clear();
        loop {
            let at = recording.length.saturating_mul(round as u32).saturating_add(recording.packets[next].due);
            if at > elapsed {
                break;
            }
            recording.write_packet(next, round, &mut batch);
            next += 1;
            if next == recording.packets.len() {
                next = 0;
                round += 1;
            }
        }
        if batch.is_empty() {
            continue;
        }
        let outlets: Vec<Arc<Outlet>> = shared.playing.lock().map(|p| p.clone()).unwrap_or_default();
        let mut gone = false;
        for outlet in &outlets {
            gone |= !outlet.send(&batch, &shared.dropped);
        }
        if gone && let Ok(mut playing) = shared.playing.lock() {
            playing.retain(|o| !o.closed.load(Ordering::Relaxed));
        }
    }
}
