//! ferropoll-gopool (pending; see its issue).
#![deny(unsafe_code)]
