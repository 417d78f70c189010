//! A TCP relay in front of a camera that can be frozen: the connections stay open, nothing passes any more.
//! That is what a camera that hangs mid-stream looks like to its client.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

pub struct FreezableProxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl FreezableProxy {
    /// Listens on a free loopback port and relays every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<FreezableProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let frozen = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        {
            let (frozen, closed) = (Arc::clone(&frozen), Arc::clone(&closed));
            thread::Builder::new().name("proxy-accept".into()).spawn(move || {
                while !closed.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let _ = client.set_nonblocking(false);
                            if let Ok(server) = TcpStream::connect(upstream) {
                                relay(client, server, &frozen, &closed);
                            }
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })?;
        }
        Ok(FreezableProxy { port, frozen, closed })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on nothing passes in either direction; sockets stay open.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// Two pumping threads, one per direction.
fn relay(client: TcpStream, server: TcpStream, frozen: &Arc<AtomicBool>, closed: &Arc<AtomicBool>) {
    for (from, to) in [(&client, &server), (&server, &client)] {
        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { return };
        let (frozen, closed) = (Arc::clone(frozen), Arc::clone(closed));
        // Short read timeouts so a frozen or closed proxy notices its flags.
        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
        let _ = thread::Builder::new().name("proxy-pump".into()).spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if closed.load(Ordering::Relaxed) {
                    break;
                }
                if frozen.load(Ordering::Relaxed) {
                    // Hold the connection open and silent until the proxy is dropped.
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}
