//! RPC status codes, in gRPC's numbering.

use std::fmt;

use crate::metadata::Metadata;

/// The outcome class of a call. The numbers are gRPC's, so a [`Code`] maps
/// 1:1 onto a gRPC status code and back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
#[non_exhaustive]
pub enum Code {
    /// Success.
    Ok = 0,
    /// The caller cancelled the call (dropped its future).
    Cancelled = 1,
    /// An error that fits no other code, or a code this side does not know.
    Unknown = 2,
    /// The request is malformed (for instance its payload does not decode).
    InvalidArgument = 3,
    /// The deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// A requested entity does not exist.
    NotFound = 5,
    /// An entity to create already exists.
    AlreadyExists = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// A limit was hit: calls in flight, message size, quota.
    ResourceExhausted = 8,
    /// The system is not in the state the call needs.
    FailedPrecondition = 9,
    /// The call was aborted, typically by a concurrency conflict.
    Aborted = 10,
    /// A value is outside its valid range.
    OutOfRange = 11,
    /// The service or method does not exist on the server.
    Unimplemented = 12,
    /// An invariant broke on the server (for instance a handler panicked).
    Internal = 13,
    /// The server cannot be reached: cannot connect, connection lost.
    Unavailable = 14,
    /// Unrecoverable data loss.
    DataLoss = 15,
    /// The caller has no valid credentials.
    Unauthenticated = 16,
}

impl Code {
    /// The code with wire number `n`; numbers this version does not know
    /// become [`Code::Unknown`], as gRPC specifies.
    ///
    /// ```
    /// use ferropoll_rpc::Code;
    /// assert_eq!(Code::from_u32(5), Code::NotFound);
    /// assert_eq!(Code::from_u32(99), Code::Unknown);
    /// ```
    pub fn from_u32(n: u32) -> Code {
        match n {
            0 => Code::Ok,
            1 => Code::Cancelled,
            2 => Code::Unknown,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            10 => Code::Aborted,
            11 => Code::OutOfRange,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            15 => Code::DataLoss,
            16 => Code::Unauthenticated,
            _ => Code::Unknown,
        }
    }

    /// The wire number.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The gRPC name, e.g. `"NOT_FOUND"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of a call: a [`Code`], a message for humans, and metadata.
///
/// Handlers return it to fail a call; clients receive it for every failure,
/// remote (the handler's status) or local (deadline, connection loss).
///
/// ```
/// use ferropoll_rpc::{Code, Status};
/// let s = Status::not_found("no such key").with_metadata("key", "a");
/// assert_eq!(s.code(), Code::NotFound);
/// assert_eq!(s.to_string(), "NOT_FOUND: no such key");
/// assert_eq!(s.metadata().get("key"), Some("a"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
    metadata: Metadata,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with `code` and `message` and no metadata.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            metadata: Metadata::new(),
        }
    }

    constructors! {
        /// [`Code::Cancelled`].
        cancelled => Cancelled,
        /// [`Code::Unknown`].
        unknown => Unknown,
        /// [`Code::InvalidArgument`].
        invalid_argument => InvalidArgument,
        /// [`Code::DeadlineExceeded`].
        deadline_exceeded => DeadlineExceeded,
        /// [`Code::NotFound`].
        not_found => NotFound,
        /// [`Code::AlreadyExists`].
        already_exists => AlreadyExists,
        /// [`Code::PermissionDenied`].
        permission_denied => PermissionDenied,
        /// [`Code::ResourceExhausted`].
        resource_exhausted => ResourceExhausted,
        /// [`Code::FailedPrecondition`].
        failed_precondition => FailedPrecondition,
        /// [`Code::Aborted`].
        aborted => Aborted,
        /// [`Code::OutOfRange`].
        out_of_range => OutOfRange,
        /// [`Code::Unimplemented`].
        unimplemented => Unimplemented,
        /// [`Code::Internal`].
        internal => Internal,
        /// [`Code::Unavailable`].
        unavailable => Unavailable,
        /// [`Code::DataLoss`].
        data_loss => DataLoss,
        /// [`Code::Unauthenticated`].
        unauthenticated => Unauthenticated,
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The metadata, to change.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Adds a metadata entry.
    #[must_use = "with_metadata returns the changed status"]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Status {
        self.metadata.insert(key, value);
        self
    }

    /// Splits the status into its parts.
    pub fn into_parts(self) -> (Code, String, Metadata) {
        (self.code, self.message, self.metadata)
    }

    /// A status from its parts.
    pub fn from_parts(code: Code, message: String, metadata: Metadata) -> Status {
        Status {
            code,
            message,
            metadata,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_numbers() {
        for n in 0..=16 {
            assert_eq!(Code::from_u32(n).as_u32(), n);
        }
        assert_eq!(Code::from_u32(17), Code::Unknown);
        assert_eq!(Code::from_u32(u32::MAX), Code::Unknown);
        assert_eq!(Code::DeadlineExceeded.as_u32(), 4);
        assert_eq!(Code::Unimplemented.as_u32(), 12);
        assert_eq!(Code::Unavailable.as_u32(), 14);
    }

    #[test]
    fn display() {
        assert_eq!(Status::internal("boom").to_string(), "INTERNAL: boom");
        assert_eq!(Status::cancelled("").to_string(), "CANCELLED");
        let e: Box<dyn std::error::Error> = Box::new(Status::unavailable("down"));
        assert_eq!(e.to_string(), "UNAVAILABLE: down");
    }
}
