//! Loopback ports for test servers, and a TCP server that accepts and then never answers.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A 127.0.0.1 port that was free a moment ago and that this process has not
/// handed out before.
///
/// The port is only reserved until the probe socket closes, so a server started
/// on it can still lose a race with another process; the server helpers retry
/// with a fresh port when their bind fails. Remembering the ports already given
/// out stops two tests of the same binary from getting the same one.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind any port on 127.0.0.1");
        let mut given = given.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return port;
        }
    }
    panic!("the kernel kept handing out ports this process already used");
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
///
/// `alive` is polled between attempts so a server that died is reported at
/// once instead of after the whole timeout; it returns an error text to stop.
/// Starts a server on a fresh port with `try_start`, which fails with `(message, port_taken)`. `free_port()`
/// cannot hold the port for the server: another process may bind it first, so a taken port is retried (three
/// tries); any other failure panics with its message.
pub fn start_on_free_port<T>(mut try_start: impl FnMut(u16) -> Result<T, (String, bool)>) -> T {
    let mut last_error = String::new();
    for _ in 0..3 {
        match try_start(free_port()) {
            Ok(server) => return server,
            Err((err, false)) => panic!("{err}"),
            Err((err, true)) => last_error = err,
        }
    }
    panic!("{last_error}");
}

pub fn wait_for_port(
    port: u16,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let until = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        alive()?;
        if Instant::now() >= until {
            return Err(format!("nothing accepted on {addr} within {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// A "camera that hangs": accepts TCP connections on 127.0.0.1 and never sends
/// a byte, keeping every socket open until dropped.
pub struct SilentServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("cannot bind 127.0.0.1:0");
        let port = listener.local_addr().expect("listener has no address").port();
        // Non-blocking so the thread can notice `stop`; a blocked accept()
        // would keep Drop waiting forever.
        listener.set_nonblocking(true).expect("cannot make the listener non-blocking");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let accepted = accepted.clone();
            let stop = stop.clone();
            thread::Builder::new()
                .name(format!("silent-server-{port}"))
                .spawn(move || {
                    let mut open: Vec<TcpStream> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((sock, _)) => {
                                open.push(sock);
                                accepted.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                thread::sleep(Duration::from_millis(10));
                            }
                            Err(e) => {
                                eprintln!("silent server on port {port}: accept failed: {e}");
                                thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                })
                .expect("cannot start the silent-server thread")
        };
        SilentServer { port, accepted, stop, thread: Some(thread) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtsp://127.0.0.1:PORT/stream`.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/stream", self.port)
    }

    /// How many connections were accepted so far (e.g. to count reconnects).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP relay on 127.0.0.1 in front of a real server that can be frozen: connections stay open, nothing passes
/// in either direction any more. In front of an RTMP server it is a server that accepts and never reads; in
/// front of a camera, a camera that hangs mid-stream.
///
/// The relay's sockets take only a small receive buffer, so a client writing to a frozen relay blocks after
/// tens of kilobytes instead of after the megabytes Linux would otherwise buffer on loopback.
pub struct FreezableRelay {
    port: u16,
    frozen: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    client_segments: Arc<AtomicUsize>,
}

impl FreezableRelay {
    /// Relays every connection to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> FreezableRelay {
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("cannot bind 127.0.0.1:0");
        small_receive_buffer(listener.as_raw_fd());
        let port = listener.local_addr().expect("listener has no address").port();
        listener.set_nonblocking(true).expect("cannot make the listener non-blocking");
        let frozen = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let client_segments = Arc::new(AtomicUsize::new(0));
        {
            let (frozen, closed, accepted) = (Arc::clone(&frozen), Arc::clone(&closed), Arc::clone(&accepted));
            let client_segments = Arc::clone(&client_segments);
            thread::Builder::new()
                .name(format!("relay-{port}"))
                .spawn(move || {
                    while !closed.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((client, _)) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                                let _ = client.set_nonblocking(false);
                                // Set on the connection itself too: that also stops the kernel from growing
                                // the buffer (Linux would let it reach tens of megabytes on loopback).
                                small_receive_buffer(client.as_raw_fd());
                                if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) {
                                    relay(client, server, &frozen, &closed, &client_segments);
                                }
                            }
                            Err(_) => thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
                .expect("cannot start the relay thread");
        }
        FreezableRelay { port, frozen, closed, accepted, client_segments }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections clients opened through the relay so far (in front of a camera: its sessions).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// How many TCP segments with data clients have sent so far (the kernel's count, `TCP_INFO`): in front of
    /// an RTMP server, one per `send` of a publisher that sets `TCP_NODELAY` (a large send may take several).
    pub fn client_segments(&self) -> usize {
        self.client_segments.load(Ordering::SeqCst)
    }

    /// From now on nothing passes in either direction; the sockets stay open and unread.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

impl Drop for FreezableRelay {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// How many segments with data `socket` has received, by the kernel's count.
fn data_segments_in(socket: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero tcp_info is a valid value of a plain C struct.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt on an open socket, writing at most `len` bytes into `info`, which is that large.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if ret == 0 { info.tcpi_data_segs_in as usize } else { 0 }
}

/// Limits a socket's receive buffer to a few kilobytes.
fn small_receive_buffer(fd: std::os::fd::RawFd) {
    let small: libc::c_int = 8 * 1024;
    // SAFETY: setsockopt on a socket the caller owns, with a pointer to a live c_int and its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Two pumping threads, one per direction; the client's segments are counted in `client_segments`.
fn relay(
    client: TcpStream,
    server: TcpStream,
    frozen: &Arc<AtomicBool>,
    closed: &Arc<AtomicBool>,
    client_segments: &Arc<AtomicUsize>,
) {
    let uncounted = Arc::new(AtomicUsize::new(0));
    for (from, to, reads) in [(&client, &server, client_segments), (&server, &client, &uncounted)] {
        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { return };
        let (frozen, closed, reads) = (Arc::clone(frozen), Arc::clone(closed), Arc::clone(reads));
        // Short read timeouts so a frozen or closed relay notices its flags.
        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
        let _ = thread::Builder::new().name("relay-pump".into()).spawn(move || {
            use std::io::{Read, Write};
            let mut buf = vec![0u8; 16 * 1024];
            let mut counted = 0;
            loop {
                if closed.load(Ordering::Relaxed) {
                    break;
                }
                if frozen.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let now = data_segments_in(&from);
                        reads.fetch_add(now.saturating_sub(counted), Ordering::SeqCst);
                        counted = now;
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    }
}
