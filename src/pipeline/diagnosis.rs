//! What a failed connection to a camera means, for the person who has to fix it: RTSP answers (401, 403, 404,
//! 454, 461, 503 …) and socket errors (refused, unreachable, timed out) turned into a sentence that says what to
//! check, with the RTSP status code kept as a number for programs. FFmpeg's own explanation stays alongside, in
//! the error's `detail`.
//!
//! FFmpeg maps RTSP statuses the way it maps HTTP ones: 401, 403 and 404 get their own error codes, other 4xx
//! and 5xx only generic ones, and its log line `method DESCRIBE failed: 503 Service Unavailable` carries the
//! number. A camera that refuses interleaved TCP answers SETUP with 461, which FFmpeg reports as
//! `EPROTONOSUPPORT` ("Protocol not supported") without a log line.

use ffmpeg_next::Error;

use crate::model::{Stage, Transport};

/// What a failure means.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnosis {
    /// The RTSP status the camera answered, if it answered one.
    pub rtsp_status: Option<u16>,
    /// What it means and what to check; `None` when there is nothing to add to FFmpeg's words.
    pub advice: Option<String>,
}

/// Explains a failure at `stage` with FFmpeg error `source` and FFmpeg's last error line `detail`, for a
/// camera at `host`:`port` and `path`, reached over `transport`.
pub fn diagnose(
    stage: Stage,
    source: &Error,
    detail: Option<&str>,
    camera: &CameraAddress<'_>,
    transport: Transport,
) -> Diagnosis {
    if !matches!(stage, Stage::OpenInput | Stage::ReadInput) {
        return Diagnosis::default();
    }
    let status = rtsp_status(source, detail, stage);
    if let Some(status) = status {
        return Diagnosis { rtsp_status: Some(status), advice: Some(explain_status(status, camera, transport)) };
    }
    let errno = match source {
        Error::Other { errno } => Some(*errno),
        _ => None,
    };
    let advice = match errno {
        Some(libc::ECONNREFUSED) => Some(format!(
            "connection refused: nothing accepts RTSP at {}:{} (wrong port, or RTSP is turned off on the camera)",
            camera.host, camera.port
        )),
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => {
            Some(format!("unreachable: no route to {} (camera off, unplugged, or on another network)", camera.host))
        }
        Some(libc::ETIMEDOUT) => Some(format!(
            "timed out: {}:{} does not answer (camera off, or a firewall drops the packets)",
            camera.host, camera.port
        )),
        Some(libc::ECONNRESET) => Some("the camera closed the connection (it may allow no more sessions)".to_owned()),
        _ => None,
    };
    Diagnosis { rtsp_status: None, advice }
}

/// Where the camera is, for the sentences.
#[derive(Debug, Clone, Copy)]
pub struct CameraAddress<'a> {
    /// Its host (name or address).
    pub host: &'a str,
    /// Its RTSP port.
    pub port: u16,
    /// The path of the stream asked for (`/stream1`).
    pub path: &'a str,
}

/// The RTSP status behind an FFmpeg error, if there is one.
fn rtsp_status(source: &Error, detail: Option<&str>, stage: Stage) -> Option<u16> {
    let from_detail = detail.and_then(status_in_line);
    match source {
        Error::HttpUnauthorized => Some(401),
        Error::HttpForbidden => Some(403),
        Error::HttpNotFound => Some(404),
        Error::HttpBadRequest => Some(400),
        Error::HttpOther4xx | Error::HttpServerError => from_detail,
        // 461 to a SETUP asking only for what the camera refuses.
        Error::Other { errno } if *errno == libc::EPROTONOSUPPORT && stage == Stage::OpenInput => Some(461),
        _ => from_detail,
    }
}

/// The status in a line like `method DESCRIBE failed: 503 Service Unavailable`.
fn status_in_line(line: &str) -> Option<u16> {
    let (_, rest) = line.split_once("failed: ")?;
    let code: u16 = rest.get(..3)?.parse().ok()?;
    (100..600).contains(&code).then_some(code)
}

fn explain_status(status: u16, camera: &CameraAddress<'_>, transport: Transport) -> String {
    match status {
        401 => "RTSP 401 Unauthorized: wrong user name or password in the camera URL — or, on some cameras, too many \
                RTSP sessions are open on it already"
            .to_owned(),
        403 => "RTSP 403 Forbidden: this user may not watch this stream (check its rights on the camera)".to_owned(),
        404 => format!("RTSP 404 Not Found: the camera has no stream at {} (check the path)", camera.path),
        454 => "RTSP 454 Session Not Found: the camera dropped the session (it rebooted, or timed the session out)"
            .to_owned(),
        461 => format!(
            "RTSP 461 Unsupported Transport: the camera refused RTP over {} (try transport \"auto\" or \"udp\")",
            transport_words(transport)
        ),
        503 => "RTSP 503 Service Unavailable: the camera is busy (too many sessions, or still starting up)".to_owned(),
        400 => "RTSP 400 Bad Request: the camera did not understand the request (check the URL)".to_owned(),
        other => format!("the camera answered RTSP {other}"),
    }
}

/// How a transport is named in a sentence.
pub fn transport_words(transport: Transport) -> &'static str {
    match transport {
        Transport::Auto | Transport::Tcp => "interleaved TCP",
        Transport::Udp => "UDP",
        Transport::UdpMulticast => "UDP multicast",
        Transport::Http => "an HTTP tunnel",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAMERA: CameraAddress<'static> = CameraAddress { host: "10.0.0.5", port: 554, path: "/stream1" };

    fn advice(source: Error, detail: Option<&str>) -> Diagnosis {
        diagnose(Stage::OpenInput, &source, detail, &CAMERA, Transport::Tcp)
    }

    #[test]
    fn rtsp_answers_become_advice_with_their_status() {
        let d = advice(Error::HttpUnauthorized, Some("method DESCRIBE failed: 401 Unauthorized"));
        assert_eq!(d.rtsp_status, Some(401));
        assert!(d.advice.unwrap().contains("wrong user name or password"));
        let d = advice(Error::HttpNotFound, None);
        assert_eq!(d.rtsp_status, Some(404));
        assert!(d.advice.unwrap().contains("no stream at /stream1"));
        let d = advice(Error::HttpServerError, Some("method DESCRIBE failed: 503 Service Unavailable"));
        assert_eq!(d.rtsp_status, Some(503));
        assert!(d.advice.unwrap().contains("busy"));
        let d = advice(Error::HttpOther4xx, Some("method PLAY failed: 454 Session Not Found"));
        assert_eq!(d.rtsp_status, Some(454));
        let d = advice(Error::Other { errno: libc::EPROTONOSUPPORT }, None);
        assert_eq!(d.rtsp_status, Some(461));
        assert!(d.advice.unwrap().contains("refused RTP over interleaved TCP"));
        assert_eq!(advice(Error::HttpForbidden, None).rtsp_status, Some(403));
    }

    #[test]
    fn socket_errors_say_what_to_check() {
        let d = advice(Error::Other { errno: libc::ECONNREFUSED }, None);
        assert_eq!(d.rtsp_status, None);
        assert!(d.advice.unwrap().contains("nothing accepts RTSP at 10.0.0.5:554"));
        assert!(advice(Error::Other { errno: libc::EHOSTUNREACH }, None).advice.unwrap().contains("no route"));
        assert_eq!(advice(Error::InvalidData, None), Diagnosis::default());
        // Not about the camera: nothing to add.
        let output = diagnose(Stage::WriteOutput, &Error::HttpNotFound, None, &CAMERA, Transport::Tcp);
        assert_eq!(output, Diagnosis::default());
    }

    #[test]
    fn status_lines_are_read_strictly() {
        assert_eq!(status_in_line("method SETUP failed: 461 Unsupported transport"), Some(461));
        assert_eq!(status_in_line("method DESCRIBE failed: abc"), None);
        assert_eq!(status_in_line("no status here"), None);
        assert_eq!(status_in_line("x failed: 99"), None);
    }
}
