//! Non-blocking TCP for camgate's own protocol clients (`pipeline::rtsp` reading cameras, `pipeline::rtmp`
//! publishing to servers): every wait is a `poll` of at most [`POLL_SLICE`], after which the camera's
//! [`Interrupter`] is consulted, as libavformat does; a stop's signal (`runtime::wake`) ends a wait at once.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::interrupt::Interrupter;

/// The longest single `poll`: how late a raised flag or a passed deadline may be noticed without a signal.
pub(crate) const POLL_SLICE: Duration = Duration::from_millis(100);

/// Why a wait or a connect failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    /// The interrupter fired: a stop, a fence, or the operation's deadline.
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Waits until `fd` is ready for one of `events`, consulting `interrupter` at least every [`POLL_SLICE`];
/// returns the events that are ready (an error or a hang-up among them: the next call on the socket says which).
pub(crate) fn wait_for(fd: RawFd, events: i16, interrupter: &Interrupter) -> Result<i16, NetError> {
    loop {
        if interrupter.check().is_some() {
            return Err(NetError::Interrupted);
        }
        let mut pollfd = libc::pollfd { fd, events, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call; `fd` is open (owned by the caller).
        let ready = unsafe { libc::poll(&mut pollfd, 1, POLL_SLICE.as_millis() as libc::c_int) };
        if ready > 0 {
            return Ok(pollfd.revents);
        }
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error.into());
            }
        }
    }
}

/// The first address `host` (a name, an IPv4 address or a bracketed IPv6 one) resolves to, at `port`.
pub(crate) fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, format!("{host} resolves to nothing")))
}

/// A non-blocking TCP connection to `address` with Nagle off, the wait for it interruptible.
pub(crate) fn connect(address: SocketAddr, interrupter: &Interrupter) -> Result<TcpStream, NetError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&address.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            wait_for(socket.as_raw_fd(), libc::POLLOUT, interrupter)?;
            if let Some(error) = socket.take_error()? {
                return Err(error.into());
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(socket.into())
}
