//! Helpers of the transport's integration tests.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ferropoll_transport::{Addr, Connection, Dispatch, EventLoop, Handler, Listener, handler_fn};

/// Echo: everything read is written back, zero-copy.
pub fn echo_round(conn: &Connection) -> io::Result<()> {
    let mut r = conn.reader();
    let n = r.len();
    if n == 0 {
        return Ok(());
    }
    let data = r.slice(n)?;
    drop(r);
    let mut w = conn.writer();
    w.append(data);
    w.flush()
}

pub fn echo_handler() -> impl Handler<State = ()> {
    handler_fn(echo_round)
}

/// Pool-mode echo with blocking reads: reads exactly what is there, at
/// least one byte.
pub fn blocking_echo_round(conn: &Connection) -> io::Result<()> {
    let mut r = conn.reader();
    r.wait(1)?;
    let n = r.len();
    let data = r.slice(n)?;
    drop(r);
    let mut w = conn.writer();
    w.append(data);
    w.flush()
}

pub fn server(dispatch: Dispatch, loops: usize) -> (EventLoop, Addr) {
    let lp = EventLoop::builder()
        .num_loops(loops)
        .dispatch(dispatch)
        .build(handler_fn(match dispatch {
            Dispatch::Pool => blocking_echo_round,
            _ => echo_round,
        }))
        .expect("build");
    let addr = lp
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .expect("listen");
    (lp, addr)
}

/// Read and write timeout of test client sockets: a hung server fails the
/// test instead of hanging it. Valgrind runs everything ~30x slower (an
/// 8 MiB echo through a pool handler took over 20 s on a loaded CI box).
pub fn socket_timeout() -> Duration {
    if std::env::var_os("FERROPOLL_UNDER_VALGRIND").is_some() {
        Duration::from_secs(180)
    } else {
        Duration::from_secs(20)
    }
}

pub fn tcp(addr: &Addr) -> TcpStream {
    let s = TcpStream::connect(addr.as_tcp().unwrap()).expect("connect");
    s.set_read_timeout(Some(socket_timeout())).unwrap();
    s.set_write_timeout(Some(socket_timeout())).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A deterministic payload.
pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `data` from a second thread while reading the echo on this one.
pub fn echo_through<S>(stream: S, data: &[u8]) -> Vec<u8>
where
    S: Read + Write + Send + TryCloneStream + 'static,
{
    let mut writer = stream.try_clone_stream();
    let out = data.to_vec();
    let t = std::thread::spawn(move || writer.write_all(&out));
    let mut back = vec![0u8; data.len()];
    let mut reader = stream;
    reader.read_exact(&mut back).expect("read echo");
    t.join().unwrap().expect("write");
    back
}

pub trait TryCloneStream: Sized {
    fn try_clone_stream(&self) -> Self;
}

impl TryCloneStream for TcpStream {
    fn try_clone_stream(&self) -> Self {
        self.try_clone().unwrap()
    }
}

impl TryCloneStream for std::os::unix::net::UnixStream {
    fn try_clone_stream(&self) -> Self {
        self.try_clone().unwrap()
    }
}
