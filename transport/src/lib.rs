//! ferropoll-transport: epoll event loops, connections and a dialer over
//! nocopy [`LinkBuffer`](ferropoll_linkbuffer::LinkBuffer)s, in the style of
//! cloudwego/netpoll.
//!
//! An echo server on loopback and a client talking to it:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::time::Duration;
//! use ferropoll_transport::{EventLoop, handler_fn};
//!
//! // Every round answers what arrived: a zero-copy view of the input,
//! // linked into the output and sent with one `sendmsg`.
//! let server = EventLoop::builder().num_loops(1).build(handler_fn(|conn| {
//!     let mut reader = conn.reader();
//!     let n = reader.len();
//!     let data = reader.slice(n)?;
//!     drop(reader);
//!     let mut writer = conn.writer();
//!     writer.append(data);
//!     writer.flush()
//! }))?;
//! let addr = server.listen_tcp("127.0.0.1:0")?;
//!
//! let mut client = std::net::TcpStream::connect(addr.as_tcp().unwrap())?;
//! client.write_all(b"hello")?;
//! let mut echoed = [0u8; 5];
//! client.read_exact(&mut echoed)?;
//! assert_eq!(&echoed, b"hello");
//!
//! drop(client);
//! server.shutdown(Duration::from_secs(1))?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! An [`EventLoop`] is a group of loop threads, each with one epoll set (edge
//! triggered, each connection registered once), a timer heap for read, write
//! and idle deadlines, and a task queue woken by an eventfd. Listeners are
//! accepted on one loop and their connections spread over all loops. A
//! [`Handler`] sees each connection's life: `on_prepare`, `on_connect`,
//! `on_request` (inline on the loop thread — no thread hop — or on a gopool
//! worker where reads may block) and `on_disconnect`.
//!
//! A [`Connection`] is a cheap shared handle: a [`Reader`] over received
//! bytes (zero-copy views into the buffer nodes), a [`Writer`] whose
//! [`flush`](Writer::flush) sends from the calling thread with one `sendmsg`
//! and leaves only a full socket to the loop, and
//! [`is_active`](Connection::is_active), an atomic load that turns false
//! as soon as the peer closes or resets, even when nobody reads.
//!
//! The [`Dialer`] (and [`dial_tcp`] / [`dial_unix`]) connects as a client;
//! dialed connections are served by client loops like accepted ones.
//!
//! What gnet and evio users expect is here too. One `EventLoop` serves any
//! number of TCP, Unix and UDP sockets at once ([`EventLoop::listen`],
//! [`EventLoop::listen_tcp`] — one `SO_REUSEPORT` socket per loop with
//! [`Builder::reuse_port`] —, [`EventLoop::listen_udp`]). UDP datagrams are
//! received and answered in batches (`recvmmsg`/`sendmmsg`) and handed to a
//! [`UdpHandler`] as borrowed slices; [`EventLoop::dial_udp`] is the client
//! side. Accepted connections are balanced round robin, by least
//! connections or by source-address hash ([`Balance`]). Each loop runs
//! timers and tasks from its timer heap ([`EventLoop::after`],
//! [`EventLoop::every`], [`EventLoop::schedule`], [`Connection::execute`]).
//! [`codec::LengthFieldCodec`] frames length-prefixed protocols over
//! `LinkBuffer` without copying.
//!
//! What differs from netpoll: `idle_timeout` really closes idle connections,
//! input and output high-water marks bound each connection's buffered
//! input and unsent output (a peer that does not read cannot make the
//! server buffer without bound: [`OutputFull`]), bytes
//! received before a hang-up still reach the handler, and registration keys
//! are slab index + generation, never pointers.
//!
//! All `unsafe` code lives in the private `sys` module.
#![deny(unsafe_code)]

mod addr;
pub mod codec;
mod conn;
mod dialer;
mod event_loop;
mod handler;
mod reactor;
mod slab;
mod sys;
mod timer;
mod udp;

// Test helpers shared with the RPC and example tests. Always compiled (a
// few small functions) but hidden: a cargo feature would need this crate as
// its own dev-dependency to reach its integration tests.
#[doc(hidden)]
pub mod testing;

pub use addr::{Addr, Listener};
pub use conn::{Connection, Reader, Writer};
pub use dialer::{Dialer, default_dialer, dial_tcp, dial_unix};
pub use event_loop::{Balance, Builder, EventLoop, OutputFull, Stats};
pub use handler::{Dispatch, FnHandler, Handler, handler_fn};
pub use timer::TimerHandle;
pub use udp::{UdpEndpoint, UdpFnHandler, UdpHandler, UdpOut, udp_handler_fn};
