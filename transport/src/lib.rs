//! ferropoll-transport (pending; see its issue).
#![deny(unsafe_code)]
