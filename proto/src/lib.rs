//! ferropoll-proto (pending; see its issue).
#![deny(unsafe_code)]
