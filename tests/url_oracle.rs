//! What FFmpeg sends is what was checked: camera URLs — a table of hostile inputs, then generated ones — are put
//! through the gateway, and a plain TCP listener standing in for the camera records the bytes that actually
//! arrive. A refused URL must be refused before anything is sent (400 naming `input`); an accepted one must
//! produce exactly `OPTIONS <the canonical URL without credentials> RTSP/1.0` and FFmpeg's own headers — no
//! header, line or byte the caller smuggled in.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use camgate::gateway::config::CameraConfig;
use camgate::gateway::{Gateway, GatewayError, GatewaySettings, RunMode};
use camgate::{CameraId, Supervisor};

/// Records the first request of every connection.
struct Camera {
    listener: TcpListener,
}

impl Camera {
    fn start() -> Camera {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Camera { listener }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// The first request of the next connection (up to the blank line), or `None` if nobody connects.
    fn next_request(&self, within: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + within;
        let mut socket = loop {
            match self.listener.accept() {
                Ok((socket, _)) => break socket,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                Err(_) => return None,
            }
        };
        socket.set_nonblocking(false).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
            match socket.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = socket.write_all(b"RTSP/1.0 404 Not Found\r\nCSeq: 1\r\n\r\n");
        Some(request)
    }
}

/// The URL FFmpeg must put in its request: the canonical URL without user info.
fn request_uri(canonical: &str) -> String {
    let mut url = url::Url::parse(canonical).unwrap();
    url.set_username("").unwrap();
    url.set_password(None).unwrap();
    url.as_str().to_owned()
}

enum Outcome {
    Refused,
    /// The canonical URL accepted.
    Sent(String),
}

/// Puts a camera with `raw` as its URL and reports what reached the listening camera.
async fn try_url(gateway: &Gateway, camera: &Camera, raw: &str) -> Outcome {
    let id: CameraId = "oracle".parse().unwrap();
    let request =
        CameraConfig { input: raw.to_owned(), output: Some("none".into()), preview: Some(true), ..Default::default() };
    let spec = match gateway.spec_from_request(id.clone(), &request) {
        Ok(spec) => spec,
        Err(e) => {
            assert_eq!(e.field(), "input", "{raw:?}: {e}");
            return Outcome::Refused;
        }
    };
    let canonical = spec.input.expose().to_owned();
    match gateway.put(spec, RunMode::Always).await {
        Ok(_) => {}
        Err(GatewayError::Spec(e)) => {
            assert_eq!(e.field(), "input", "{raw:?}: {e}");
            return Outcome::Refused;
        }
        Err(e) => panic!("{raw:?}: {e}"),
    }
    let sent = tokio::task::block_in_place(|| camera.next_request(Duration::from_secs(5)));
    gateway.remove(&id).await.expect("the camera stops");
    let sent = sent.unwrap_or_else(|| panic!("{raw:?} was accepted but nothing connected"));
    let text = String::from_utf8(sent).unwrap_or_else(|e| panic!("{raw:?}: non-UTF-8 bytes sent: {e}"));
    let mut lines =
        text.strip_suffix("\r\n\r\n").unwrap_or_else(|| panic!("{raw:?}: unterminated {text:?}")).split("\r\n");
    let first = lines.next().unwrap();
    assert_eq!(first, format!("OPTIONS {} RTSP/1.0", request_uri(&canonical)), "{raw:?}");
    for line in lines {
        let (name, _) = line.split_once(": ").unwrap_or_else(|| panic!("{raw:?}: not a header line {line:?}"));
        assert!(["CSeq", "User-Agent"].contains(&name), "{raw:?}: header {line:?} was sent");
    }
    assert!(!text.contains('\0') && !text[..text.len() - 4].contains("\r\n\r\n"));
    Outcome::Sent(canonical)
}

fn gateway() -> Gateway {
    Gateway::new(Supervisor::new(common::rig()), GatewaySettings::default(), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_urls_are_refused_or_sent_exactly_as_checked() {
    let camera = Camera::start();
    let p = camera.port();
    let gateway = gateway();
    let refused = [
        format!("rtsp://127.0.0.1:{p}/a\0b"),
        format!("rtsp://127.0.0.1:{p}/a\r\nX-Injected: 1\r\nFoo:"),
        format!("rtsp://127.0.0.1:{p}/a\nb"),
        format!("rtsp://127.0.0.1:{p}/a\tb"),
        format!("rtsp://127.0.0.1:{p}/a b"),
        format!(" rtsp://127.0.0.1:{p}/a"),
        format!("rtsp://127.0.0.1:{p}/a%00"),
        format!("rtsp://127.0.0.1:{p}/a%0D%0AX-Injected:%201"),
        format!("rtsp://127.0.0.1:{p}/a%0a"),
        format!("rtsp://127.0.0.1:{p}/a%09b"),
        format!("rtsp://u%0D%0AX:p@127.0.0.1:{p}/a"),
        format!("rtsp://127.0.0.1:{p}/a%zz"),
        format!("rtsp://127.0.0.1:{p}\\@evil.example/x"),
        format!("rtsp://evil.example\\@127.0.0.1:{p}/x"),
        format!("rtsp://127.0.0.1:{p}/x#frag"),
        format!("rtsp://[fe80::1%25lo]:{p}/s"),
        format!("rtsp://hé.example:{p}/s"),
        format!("rtsp://127.0.0.1:{p}/é"),
        format!("rtsp://0x7f.1:{p}/s"),
        format!("rtsp://2130706433:{p}/s"),
        format!("rtsp://127.0.0.1:{p}/{}", "a".repeat(3000)),
        "rtsp://169.254.169.254/latest/meta-data".to_owned(),
        "rtsp://[::1]:554/s".to_owned(),
        "rtsp://[::ffff:169.254.169.254]/s".to_owned(),
        "file:///etc/passwd".to_owned(),
        format!("rtmp://127.0.0.1:{p}/live/x"),
    ];
    for raw in &refused {
        assert!(matches!(try_url(&gateway, &camera, raw).await, Outcome::Refused), "{raw:?} was accepted");
    }
    assert!(camera.next_request(Duration::from_millis(100)).is_none(), "a refused URL reached the camera");

    let sent = [
        (
            format!("rtsp://127.0.0.1:{p}/a%20b?channel=1&subtype=0"),
            format!("rtsp://127.0.0.1:{p}/a%20b?channel=1&subtype=0"),
        ),
        (format!("rtsp://good@127.0.0.1:{p}/x"), format!("rtsp://good@127.0.0.1:{p}/x")),
        (format!("rtsp://admin:p@ss@127.0.0.1:{p}/x"), format!("rtsp://admin:p%40ss@127.0.0.1:{p}/x")),
        (format!("RTSP://127.0.0.1:{p}/a/../b"), format!("rtsp://127.0.0.1:{p}/b")),
        (format!("rtsp://127.0.0.1:{p}/a\"b<c>"), format!("rtsp://127.0.0.1:{p}/a%22b%3Cc%3E")),
    ];
    for (raw, canonical) in &sent {
        match try_url(&gateway, &camera, raw).await {
            Outcome::Sent(got) => assert_eq!(&got, canonical, "{raw:?}"),
            Outcome::Refused => panic!("{raw:?} was refused"),
        }
    }
    gateway.shutdown().await;
}

/// Hostile pieces dropped into the user info, path and query of a URL of the listening camera.
const PIECES: [&str; 26] = [
    "\0",
    "\r\n",
    "\r\nX-Injected: 1\r\n",
    "\t",
    " ",
    "%00",
    "%0D%0A",
    "%0a",
    "%09",
    "%20",
    "%",
    "%zz",
    "@",
    "\\",
    "#",
    "?",
    "/",
    ":",
    "[",
    "]",
    "é",
    "\u{7f}",
    "%25",
    "%22",
    "..",
    "&",
];

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn generated(seed: u64, port: u16) -> String {
    let mut n = seed;
    let mut next = || {
        n = splitmix64(n);
        n
    };
    let mut part = |len: u64| -> String {
        (0..len)
            .map(|_| {
                let r = next();
                if r % 3 == 0 { PIECES[(r >> 8) as usize % PIECES.len()].to_owned() } else { format!("x{}", r % 100) }
            })
            .collect()
    };
    let user = part(next_len(seed, 0));
    let path = part(next_len(seed, 1) + 1);
    let query = part(next_len(seed, 2));
    let auth = if user.is_empty() { String::new() } else { format!("{user}@") };
    let query = if query.is_empty() { String::new() } else { format!("?{query}") };
    format!("rtsp://{auth}127.0.0.1:{port}/{path}{query}")
}

fn next_len(seed: u64, which: u64) -> u64 {
    splitmix64(seed * 3 + which) % 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_urls_send_only_what_was_checked() {
    let camera = Camera::start();
    let gateway = gateway();
    let (mut refused, mut sent) = (0, 0);
    for seed in 0..200 {
        let raw = generated(seed, camera.port());
        match try_url(&gateway, &camera, &raw).await {
            Outcome::Refused => refused += 1,
            Outcome::Sent(_) => sent += 1,
        }
    }
    eprintln!("generated URLs: {sent} sent exactly as checked, {refused} refused before anything was sent");
    assert!(sent >= 20 && refused >= 20, "both kinds were exercised: {sent} sent, {refused} refused");
    assert!(camera.next_request(Duration::from_millis(100)).is_none(), "nothing else reached the camera");
    gateway.shutdown().await;
}
