//! HTTP/2 (RFC 9113) for gRPC: frames and the server side of a
//! connection as a sans-IO state machine over [`LinkBuffer`]s, tested in
//! memory. HPACK (RFC 7541) comes from the `loona-hpack` crate.
//!
//! [`LinkBuffer`]: ferropoll_linkbuffer::LinkBuffer

pub(crate) mod conn;
pub(crate) mod frame;

#[cfg(test)]
mod tests;
