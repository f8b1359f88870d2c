//! ferropoll-rpc (pending; see its issue).
#![deny(unsafe_code)]
