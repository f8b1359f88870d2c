//! The sans-IO core, in the manner of quinn-proto: the state machines of
//! the protocol, with no socket, thread or timer of their own. Feed them
//! bytes and the time; they give back bytes to write and completed calls.
//! [`Server`](crate::Server) and [`Client`](crate::Client) are thin glue
//! that runs them on event loops; use these types to run the protocol over
//! something else (a test harness, another I/O layer, a simulator).
//!
//! - [`ClientSession`]: one connection's client side — starts calls into
//!   a buffer, completes them from the bytes read back; its [`CallTable`]
//!   matches responses to calls by sequence id.
//! - [`ServerConn`]: one connection's server side, for
//!   [`ServerEngine::process`](crate::ServerEngine::process), which turns
//!   a batch of request bytes into response bytes and returns its
//!   [`Progress`]; calls for the pool come back as [`DeferredCall`]s for
//!   the glue to run where it likes.
//! - [`Outbox`]: where a stream's later frames go (window updates,
//!   messages, cancels) once the glue owns the connection.
//!
//! ```
//! use std::time::Instant;
//! use ferropoll_rpc::{CallOptions, ClientOptions, LinkBuffer, PeerAddr, ServerEngine};
//! use ferropoll_rpc::sansio::{ClientSession, ServerConn};
//!
//! let session = ClientSession::new(&ClientOptions::default());
//! let mut wire = LinkBuffer::new();
//! let call = session.start_call::<(), ()>(&mut wire, "nope.Nope", "Call", &(), &CallOptions::DEFAULT);
//! wire.flush();
//!
//! // the "server" side of the wire
//! let (engine, conn) = (ServerEngine::new(), ServerConn::new(PeerAddr::unknown()));
//! let mut back = LinkBuffer::new();
//! engine.process(&conn, &mut wire, &mut back, &mut Vec::new(), Instant::now()).unwrap();
//! back.flush();
//!
//! assert_eq!(session.handle_input(&mut back).unwrap(), 1);
//! assert_eq!(call.wait().unwrap_err().code(), ferropoll_rpc::Code::Unimplemented);
//! ```

mod session;

pub use crate::call::CallTable;
pub use crate::server::{DeferredCall, Progress, ServerConn};
pub use crate::stream::Outbox;
pub use session::ClientSession;
