//! The HTTP/2 server state machine driven in memory.
