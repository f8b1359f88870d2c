//! The nocopy streaming buffer: netpoll's `LinkBuffer`, made safe.
//!
//! A [`LinkBuffer`] is a queue of *nodes*, each a window into an mcache
//! buffer shared by reference count. Bytes are written at the tail and read
//! at the head; a read that fits in one node borrows the node instead of
//! copying, and [`slice`](LinkBuffer::slice) / [`next_bytes`](LinkBuffer::next_bytes)
//! hand out owned views that keep their nodes alive after the buffer has
//! moved on. It implements [`bytes::Buf`] and [`bytes::BufMut`], so `prost`
//! decodes from and encodes into it directly, and a decoded `bytes::Bytes`
//! field is a view into the node, not a copy.
//!
//! ```
//! use bytes::{Buf, BufMut};
//! use ferropoll_linkbuffer::LinkBuffer;
//!
//! let mut buf = LinkBuffer::new();
//! buf.put_u32(5); // length prefix
//! buf.put_slice(b"hello");
//! buf.flush(); // publish to the read side
//!
//! let n = buf.get_u32() as usize;
//! let payload = buf.next_bytes(n).unwrap(); // zero-copy view
//! buf.release(); // the node stays alive while `payload` does
//! assert_eq!(&payload[..], b"hello");
//! ```
//!
//! # Model
//!
//! The content is a byte stream split in two: the **readable** prefix
//! ([`len`](LinkBuffer::len)), and the **unflushed** rest
//! ([`unflushed_len`](LinkBuffer::unflushed_len)). Every write — `malloc`,
//! `write_binary`, `write_bytes`, `append`, `BufMut` — adds unflushed bytes;
//! [`flush`](LinkBuffer::flush) makes them readable (O(1)); `malloc_ack`
//! truncates them. The read side — `peek`, `next`, `skip`, `until`,
//! `read_*`, `slice`, `next_bytes`, `Buf` — sees only readable bytes, and
//! asking for more than `len()` is [`Error::Insufficient`], never a panic.
//!
//! [`book`](LinkBuffer::book) / [`book_ack`](LinkBuffer::book_ack) are the
//! socket path: free space to `read()` into, sized by an adaptive read size
//! (8 KiB, doubling to 256 KiB while reads fill it, halving back when they
//! do not); `book_ack(n)` commits and flushes. `book` after `malloc` without
//! a flush is allowed: the booked space follows the malloc'd bytes and
//! `book_ack` publishes both. Any write between `book` and `book_ack`
//! cancels the booking.
//!
//! # Netpoll, kept and fixed
//!
//! Kept: the operation set and its meaning (`Next`/`Peek`/`Skip`/`Until`/
//! `ReadBinary`/`Slice`/`Release`, `Malloc`/`MallocAck`/`WriteBinary`/
//! `WriteDirect`/`Append`/`Flush`, `book`/`bookAck`), zero-copy reads within
//! a node and one copy across nodes, size-class nodes from mcache.
//! Fixed: a slice returned by `peek`/`next` borrows the buffer, so using it
//! after `release` (netpoll #408, #412) does not compile; large nodes are not
//! kept for small writes and an idle buffer holds no node (#76, #342); bytes
//! kept alive by views are counted ([`pinned_bytes`]); bad sizes are errors,
//! not panics.
//!
//! ```compile_fail
//! use ferropoll_linkbuffer::LinkBuffer;
//! let mut buf = LinkBuffer::new();
//! buf.write_binary(b"abc");
//! buf.flush();
//! let bytes = buf.next(3).unwrap();
//! buf.release(); // error: `buf` is still borrowed by `bytes`
//! assert_eq!(bytes, b"abc");
//! ```
//!
//! # Concurrency
//!
//! No operation runs concurrently on one `LinkBuffer`: every mutation takes
//! `&mut self`, so the types say so; the buffer is `Send + Sync` (shared
//! `&LinkBuffer` only reads). Unlike netpoll's lock-free single-producer /
//! single-consumer buffer, a producer/consumer hand-off between threads is
//! done by the owner of the two halves: the producer fills its *own* buffer
//! and the consumer side [`append`](LinkBuffer::append)s it — O(nodes), no
//! byte copied — under a short lock. This is how the transport moves socket
//! input from a loop thread to a handler.
//!
//! Views (`slice`, `next_bytes`) may move to other threads and read their
//! bytes while the original buffer keeps writing into the same node: a node
//! has one writer (the buffer that allocated it), which writes only bytes no
//! view covers; views cover only flushed bytes, which are never written
//! again.
//!
//! # Memory
//!
//! Nodes come from mcache: `max(n + 16, 8 KiB)` for writes (at most 8 MiB
//! per node for `write_binary`; a larger `malloc`/`book` gets one
//! contiguous unpooled node), the read size for `book` — which carries a
//! small unread remainder (a partial frame) into its new node so frames
//! stay contiguous, as `BytesMut::reserve` does. A node's reference count
//! and capacity live in the first [`NODE_HEADER`] (16) bytes of its own
//! buffer, so a node costs one mcache buffer and nothing else: in steady
//! state the buffer makes no call to the system allocator per message
//! (`tests/hot_paths.rs` checks this for echo, RPC and frame decoding).
//! `release()` drops every fully read node and, when nothing is left, all
//! memory: a new or idle buffer holds no heap memory
//! ([`LinkBuffer::held_bytes`] is 0) and `size_of::<LinkBuffer>()` is 120
//! bytes on 64-bit targets.
//!
//! # Views and copies
//!
//! [`slice`](LinkBuffer::slice) is always zero-copy and allocation-free: a
//! node reference per node spanned. A `bytes::Bytes` over node memory
//! ([`next_bytes`](LinkBuffer::next_bytes), `Buf::copy_to_bytes`, which
//! `prost` uses for `bytes` fields) needs a `Bytes::from_owner` — one heap
//! allocation — and can only be made over bytes already written. So each
//! node keeps the last such `Bytes`, made over *all* its readable bytes,
//! and later views within it are slices of it (a refcount increment): a
//! read of many frames pays one allocation for all of them. A view that
//! would need a new one for little benefit — at most 1 KiB, with fewer
//! than 4 KiB readable after it in its node: a field of the last message
//! of a read — is instead copied into a small per-thread arena (a
//! `BytesMut` shared by such copies, reclaimed in place), which allocates
//! nothing and pins no node.
#![deny(unsafe_code)]

mod arena;
mod buf_impls;
mod buffer;
mod error;
mod node;
mod slots;

pub use buffer::{BLOCK_SIZE, LINK_MIN, LinkBuffer, MAX_NODE, MAX_READ_SIZE, MIN_READ_SIZE};
pub use error::{Error, Result};
pub use node::{NODE_HEADER, pinned_bytes};
