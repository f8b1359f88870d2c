//! The hot paths allocate nothing in steady state: counted with a global
//! allocator that counts this thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Buf;
use ferropoll_linkbuffer::LinkBuffer;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialised thread-local `Cell`, which neither
// allocates nor re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while running `f`.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

fn frames(count: usize, payload: usize) -> LinkBuffer {
    let mut buf = LinkBuffer::new();
    for i in 0..count {
        buf.write_binary(&(payload as u32).to_be_bytes());
        buf.write_binary(&vec![i as u8; payload]);
    }
    buf.flush();
    buf
}

#[test]
fn next_bytes_within_a_node_allocates_once_per_flush() {
    // 100 frames: enough bytes behind the first one for a shared view.
    let mut buf = frames(100, 50);
    let mut views = Vec::with_capacity(100);
    let (n, ()) = allocations(|| {
        for _ in 0..100 {
            buf.skip(4).unwrap();
            views.push(buf.next_bytes(50).unwrap());
        }
    });
    assert_eq!(n, 1, "one cached view per node, then refcount increments");
    assert!(
        views
            .iter()
            .enumerate()
            .all(|(i, v)| v.iter().all(|&b| b == i as u8))
    );
}

#[test]
fn slice_within_a_node_allocates_nothing() {
    let mut buf = frames(20, 50);
    let mut slices = Vec::with_capacity(20);
    let (n, ()) = allocations(|| {
        for _ in 0..20 {
            buf.skip(4).unwrap();
            slices.push(buf.slice(50).unwrap()); // a node reference, no `Bytes`
        }
    });
    assert_eq!(n, 0);
    for (i, s) in slices.iter_mut().enumerate() {
        assert_eq!(s.chunk(), &[i as u8; 50][..]);
    }
}

#[test]
fn cross_node_peek_and_next_reuse_the_scratch_buffer() {
    let mut buf = LinkBuffer::new();
    for _ in 0..40 {
        let mut part = LinkBuffer::new();
        part.write_binary(&[1, 2, 3]);
        buf.append(part);
    }
    buf.flush();
    let _ = buf.peek(8).unwrap(); // sizes the scratch buffer
    let (n, ()) = allocations(|| {
        for _ in 0..20 {
            assert_eq!(buf.peek(5).unwrap(), [1, 2, 3, 1, 2]);
            assert_eq!(buf.next(6).unwrap(), [1, 2, 3, 1, 2, 3]);
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn small_writes_reads_and_single_node_append_allocate_nothing() {
    let mut buf = LinkBuffer::new();
    buf.write_binary(b"warm"); // the node
    buf.flush();
    buf.skip(4).unwrap();
    let mut other = LinkBuffer::new();
    other.write_binary(b"other");
    let mut target = LinkBuffer::new();
    let (n, ()) = allocations(|| {
        for i in 0..100u8 {
            buf.write_binary(&[i; 16]);
            buf.flush();
            assert_eq!(buf.next(16).unwrap(), &[i; 16]);
            assert_eq!(
                buf.read_byte(),
                Err(ferropoll_linkbuffer::Error::Insufficient {
                    requested: 1,
                    available: 0
                })
            );
        }
        target.append(other);
        target.flush();
    });
    assert_eq!(n, 0);
    assert_eq!(target.next(5).unwrap(), b"other");
}
