//! The crate's error type.

use std::fmt;
use std::io;

/// Why a `LinkBuffer` operation could not be done. Nothing is consumed or
/// written when an operation returns an error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Asked for more bytes than are readable.
    Insufficient {
        /// Bytes asked for.
        requested: usize,
        /// Bytes readable.
        available: usize,
    },
    /// `until` found no delimiter in the readable bytes.
    DelimiterNotFound,
    /// `read_string` found bytes that are not UTF-8.
    InvalidUtf8,
    /// `malloc_ack(n)` with `n` above `malloc_len()`.
    AckTooLarge {
        /// Bytes acknowledged.
        requested: usize,
        /// Bytes malloc'd since the last flush.
        available: usize,
    },
}

impl Error {
    /// Whether more input could make the operation succeed
    /// ([`Insufficient`](Error::Insufficient) or
    /// [`DelimiterNotFound`](Error::DelimiterNotFound)): the usual "wait for
    /// the next read" case of a decoder.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, Error::Insufficient { .. } | Error::DelimiterNotFound)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Insufficient {
                requested,
                available,
            } => write!(
                f,
                "asked for {requested} bytes but only {available} are readable"
            ),
            Error::DelimiterNotFound => f.write_str("delimiter not found in the readable bytes"),
            Error::InvalidUtf8 => f.write_str("bytes are not valid UTF-8"),
            Error::AckTooLarge {
                requested,
                available,
            } => write!(
                f,
                "malloc_ack({requested}) exceeds the {available} bytes written since the last flush"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    /// `Insufficient` and `DelimiterNotFound` map to `UnexpectedEof` (the
    /// input ended before what was asked for), `InvalidUtf8` to
    /// `InvalidData`, `AckTooLarge` to `InvalidInput`.
    fn from(e: Error) -> io::Error {
        let kind = match e {
            Error::Insufficient { .. } | Error::DelimiterNotFound => io::ErrorKind::UnexpectedEof,
            Error::InvalidUtf8 => io::ErrorKind::InvalidData,
            Error::AckTooLarge { .. } => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, Error>;
