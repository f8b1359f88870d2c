//! Shared pieces of the example binaries.
#![deny(unsafe_code)]
pub mod codec;
pub mod echo;
pub mod http;
pub mod pb;
pub mod resp;
pub mod rpc_load;
pub mod udp_load;
