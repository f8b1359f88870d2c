//! The crate's one error type.

use std::fmt;

/// Why [`try_malloc`](crate::try_malloc) or
/// [`Buf::try_set_len`](crate::Buf::try_set_len) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    CapacityOverflow { requested: usize },
    OutOfMemory { requested: usize },
    LenAboveCapacity { len: usize, capacity: usize },
}

impl Error {
    pub(crate) fn capacity_overflow(requested: usize) -> Error {
        Error {
            kind: Kind::CapacityOverflow { requested },
        }
    }

    pub(crate) fn out_of_memory(requested: usize) -> Error {
        Error {
            kind: Kind::OutOfMemory { requested },
        }
    }

    pub(crate) fn len_above_capacity(len: usize, capacity: usize) -> Error {
        Error {
            kind: Kind::LenAboveCapacity { len, capacity },
        }
    }

    /// The requested size does not fit a memory layout (over `isize::MAX`).
    #[must_use]
    pub fn is_capacity_overflow(&self) -> bool {
        matches!(self.kind, Kind::CapacityOverflow { .. })
    }

    /// The system allocator could not provide the memory.
    #[must_use]
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self.kind, Kind::OutOfMemory { .. })
    }

    /// A length above the buffer's capacity was asked for.
    #[must_use]
    pub fn is_len_above_capacity(&self) -> bool {
        matches!(self.kind, Kind::LenAboveCapacity { .. })
    }

    /// What the infallible API does with this error: abort through
    /// `handle_alloc_error` when out of memory, panic otherwise.
    #[cold]
    #[inline(never)]
    pub(crate) fn raise(self) -> ! {
        if let Kind::OutOfMemory { requested } = self.kind
            && let Ok(layout) = std::alloc::Layout::from_size_align(requested.max(1), 16)
        {
            std::alloc::handle_alloc_error(layout);
        }
        panic!("{self}")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::CapacityOverflow { requested } => {
                write!(f, "mcache: capacity overflow ({requested} bytes requested)")
            }
            Kind::OutOfMemory { requested } => {
                write!(f, "mcache: out of memory ({requested} bytes requested)")
            }
            Kind::LenAboveCapacity { len, capacity } => {
                write!(f, "mcache: length {len} above capacity {capacity}")
            }
        }
    }
}

impl std::error::Error for Error {}
