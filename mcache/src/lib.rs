//! Size-class byte-buffer allocator (placeholder implementation; see the
//! foundation issue). The public surface here is the contract other crates
//! build on: [`malloc`], [`Buf`], [`stats`].
#![deny(unsafe_code)]

mod buf;

pub use buf::{Buf, MAX_POOLED, MIN_CLASS, Stats, malloc, stats};
