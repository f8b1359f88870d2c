//! Unit tests of every `LinkBuffer` operation through the public API,
//! including reads spanning 2, 3 and many nodes, and the error cases.

use std::io::{self, IoSlice};

use bytes::{Buf, BufMut, Bytes};
use ferropoll_linkbuffer::{
    BLOCK_SIZE, Error, LINK_MIN, LinkBuffer, MAX_NODE, MAX_READ_SIZE, MIN_READ_SIZE, NODE_HEADER,
};

/// A flushed buffer whose content is `parts`, one node per part.
fn chain(parts: &[&[u8]]) -> LinkBuffer {
    let mut buf = LinkBuffer::new();
    for p in parts {
        let mut node = LinkBuffer::new();
        node.write_binary(p);
        buf.append(node);
    }
    buf.flush();
    buf
}

/// `n` distinct-ish bytes.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn all(buf: &mut LinkBuffer) -> Vec<u8> {
    let n = buf.len();
    buf.read_binary(n).unwrap()
}

fn under_valgrind() -> bool {
    std::env::var_os("FERROPOLL_UNDER_VALGRIND").is_some()
}

// ---------------------------------------------------------------------------
// construction and flush

#[test]
fn new_buffer_holds_nothing() {
    let buf = LinkBuffer::new();
    assert_eq!(buf.len(), 0);
    assert!(buf.is_empty());
    assert_eq!(buf.node_count(), 0);
    assert_eq!(buf.held_bytes(), 0);
    assert_eq!(buf.unflushed_len(), 0);
    assert_eq!(
        format!("{buf:?}"),
        "LinkBuffer { len: 0, unflushed: 0, nodes: 0, read_size: 8192 }"
    );
    assert_eq!(format!("{:?}", LinkBuffer::default()), format!("{buf:?}"));
}

#[test]
fn writes_are_invisible_until_flush() {
    let mut buf = LinkBuffer::new();
    buf.write_binary(b"hello");
    assert_eq!(buf.len(), 0);
    assert_eq!(buf.unflushed_len(), 5);
    assert_eq!(buf.malloc_len(), 5);
    assert_eq!(
        buf.peek(1),
        Err(Error::Insufficient {
            requested: 1,
            available: 0
        })
    );
    buf.flush();
    assert_eq!(buf.len(), 5);
    assert_eq!(buf.unflushed_len(), 0);
    buf.write_binary(b" world");
    assert_eq!(buf.len(), 5);
    assert_eq!(buf.peek(5).unwrap(), b"hello");
    buf.flush();
    assert_eq!(all(&mut buf), b"hello world");
}

// ---------------------------------------------------------------------------
// peek / next / skip

#[test]
fn peek_within_one_node_is_zero_copy() {
    let mut buf = chain(&[b"abcdef"]);
    let p1 = buf.peek(3).unwrap().as_ptr();
    let mut iov = [IoSlice::new(&[])];
    assert_eq!(buf.readable_vectored(&mut iov), 1);
    assert_eq!(p1, iov[0].as_ptr());
    assert_eq!(buf.peek(6).unwrap(), b"abcdef");
    assert_eq!(buf.len(), 6);
}

#[test]
fn peek_and_next_span_two_three_and_many_nodes() {
    for parts in [
        vec![&b"ab"[..], b"cd"],
        vec![&b"a"[..], b"bcd", b"ef"],
        vec![&b"x"[..]; 100],
    ] {
        let want: Vec<u8> = parts.concat();
        let mut buf = chain(&parts);
        assert_eq!(buf.node_count(), parts.len());
        assert_eq!(buf.peek(want.len()).unwrap(), &want[..]);
        assert_eq!(buf.len(), want.len(), "peek consumes nothing");
        assert_eq!(buf.next(want.len()).unwrap(), &want[..]);
        assert_eq!(buf.len(), 0);
        buf.release();
        assert_eq!(buf.node_count(), 0);
    }
}

#[test]
fn next_across_nodes_then_within_a_node() {
    let mut buf = chain(&[b"abc", b"defgh", b"ij"]);
    assert_eq!(buf.next(4).unwrap(), b"abcd");
    assert_eq!(buf.node_count(), 2, "the first node is dropped once passed");
    assert_eq!(buf.next(2).unwrap(), b"ef");
    assert_eq!(buf.next(3).unwrap(), b"ghi");
    assert_eq!(buf.next(1).unwrap(), b"j");
    assert!(buf.next(1).is_err());
}

#[test]
fn zero_length_reads_on_an_empty_buffer() {
    let mut buf = LinkBuffer::new();
    assert_eq!(buf.peek(0).unwrap(), b"");
    assert_eq!(buf.next(0).unwrap(), b"");
    buf.skip(0).unwrap();
    assert_eq!(buf.read_binary(0).unwrap(), b"");
    assert_eq!(buf.read_string(0).unwrap(), "");
    assert_eq!(buf.next_bytes(0).unwrap(), Bytes::new());
    assert_eq!(buf.slice(0).unwrap().len(), 0);
    assert_eq!(buf.node_count(), 0);
}

#[test]
fn every_read_past_len_is_insufficient_and_consumes_nothing() {
    let mut buf = chain(&[b"abc", b"de"]);
    let e = Error::Insufficient {
        requested: 6,
        available: 5,
    };
    assert_eq!(buf.peek(6), Err(e.clone()));
    assert_eq!(buf.next(6), Err(e.clone()));
    assert_eq!(buf.skip(6), Err(e.clone()));
    assert_eq!(buf.read_binary(6), Err(e.clone()));
    assert_eq!(buf.read_string(6), Err(e.clone()));
    assert_eq!(buf.next_bytes(6), Err(e.clone()));
    assert_eq!(buf.slice(6).map(|s| s.len()), Err(e.clone()));
    assert_eq!(
        buf.next(usize::MAX),
        Err(Error::Insufficient {
            requested: usize::MAX,
            available: 5
        })
    );
    assert_eq!(buf.len(), 5);
    assert_eq!(all(&mut buf), b"abcde");
    assert_eq!(
        buf.read_byte(),
        Err(Error::Insufficient {
            requested: 1,
            available: 0
        })
    );
}

#[test]
fn skip_spans_nodes() {
    let mut buf = chain(&[b"abc", b"def", b"ghi"]);
    buf.skip(7).unwrap();
    assert_eq!(buf.node_count(), 1);
    assert_eq!(all(&mut buf), b"hi");
}

// ---------------------------------------------------------------------------
// until / read_byte / read_binary / read_string

#[test]
fn until_finds_the_delimiter_in_any_node() {
    let mut buf = chain(&[b"GET ", b"/ HTTP", b"/1.1\r", b"\nHost: x\r\n"]);
    assert_eq!(buf.until(b'\n').unwrap(), b"GET / HTTP/1.1\r\n");
    assert_eq!(buf.until(b'\n').unwrap(), b"Host: x\r\n");
    assert_eq!(buf.until(b'\n'), Err(Error::DelimiterNotFound));
}

#[test]
fn until_not_found_consumes_nothing_and_ignores_unflushed_bytes() {
    let mut buf = chain(&[b"abc", b"def"]);
    buf.write_binary(b"\n");
    assert_eq!(buf.until(b'\n'), Err(Error::DelimiterNotFound));
    assert_eq!(buf.len(), 6);
    buf.flush();
    assert_eq!(buf.until(b'\n').unwrap(), b"abcdef\n");
    assert!(buf.is_empty());
}

#[test]
fn read_byte_crosses_nodes() {
    let mut buf = chain(&[b"a", b"b", b"cd"]);
    let got: Vec<u8> = (0..4).map(|_| buf.read_byte().unwrap()).collect();
    assert_eq!(got, b"abcd");
    assert!(buf.read_byte().is_err());
}

#[test]
fn read_binary_copies_across_nodes() {
    let mut buf = chain(&[b"ab", b"cd", b"ef"]);
    let v = buf.read_binary(5).unwrap();
    assert_eq!(v, b"abcde");
    assert_eq!(buf.len(), 1);
}

#[test]
fn read_string_checks_utf8_across_nodes_and_consumes_nothing_on_error() {
    let snow = "☃".as_bytes(); // 3 bytes, split across nodes
    let mut buf = chain(&[b"a", &snow[..1], &snow[1..], b"b"]);
    assert_eq!(buf.read_string(5).unwrap(), "a☃b");

    let mut buf = chain(&[b"ok", &[0xff, 0xfe], b"!"]);
    assert_eq!(buf.read_string(5), Err(Error::InvalidUtf8));
    assert_eq!(buf.len(), 5, "nothing consumed");
    assert_eq!(buf.read_string(2).unwrap(), "ok");
    // A string cut inside a multi-byte character is not UTF-8 either.
    let mut buf = chain(&[snow]);
    assert_eq!(buf.read_string(2), Err(Error::InvalidUtf8));
}

// ---------------------------------------------------------------------------
// release

#[test]
fn release_frees_an_idle_buffer_entirely() {
    let mut buf = LinkBuffer::new();
    buf.write_binary(&pattern(3000, 1));
    buf.flush();
    let _ = buf.peek(10).unwrap();
    buf.skip(3000).unwrap();
    assert!(buf.held_bytes() > 0, "the drained node waits for release");
    buf.release();
    assert_eq!(buf.node_count(), 0);
    assert_eq!(buf.held_bytes(), 0);
}

#[test]
fn release_keeps_unread_and_unflushed_bytes() {
    let mut buf = chain(&[b"abc", b"def"]);
    buf.skip(4).unwrap();
    buf.write_binary(b"xyz");
    buf.release();
    assert_eq!(buf.len(), 2);
    assert_eq!(buf.unflushed_len(), 3);
    buf.flush();
    assert_eq!(all(&mut buf), b"efxyz");
    // Only unflushed bytes left: still not idle.
    buf.write_binary(b"q");
    buf.release();
    assert_eq!(buf.unflushed_len(), 1);
    buf.flush();
    assert_eq!(all(&mut buf), b"q");
}

#[test]
fn release_drops_a_large_scratch_buffer() {
    let a = pattern(10_000, 1);
    let b = pattern(10_000, 2);
    let mut buf = chain(&[&a, &b, b"tail"]);
    let _ = buf.next(20_000).unwrap(); // crosses nodes: copied to scratch
    let before = buf.held_bytes();
    buf.release();
    assert!(buf.held_bytes() + 16_000 <= before);
    assert_eq!(all(&mut buf), b"tail");
}

// ---------------------------------------------------------------------------
// slice / next_bytes

#[test]
fn slice_outlives_release_and_the_buffer() {
    let mut buf = chain(&[b"hello", b" wor", b"ld!"]);
    let mut s = buf.slice(11).unwrap();
    assert_eq!(s.node_count(), 3);
    buf.release();
    drop(buf);
    assert_eq!(s.len(), 11);
    assert_eq!(s.next(11).unwrap(), b"hello world");
}

#[test]
fn slice_within_one_node_shares_it() {
    let mut buf = chain(&[b"0123456789"]);
    let base = buf.peek(1).unwrap().as_ptr();
    buf.skip(2).unwrap();
    let mut s = buf.slice(5).unwrap();
    assert_eq!(s.node_count(), 1);
    let p = s.peek(5).unwrap();
    assert_eq!(p, b"23456");
    assert_eq!(p.as_ptr(), base.wrapping_add(2), "same memory, no copy");
    assert_eq!(all(&mut buf), b"789");
}

#[test]
fn writer_keeps_writing_the_node_a_slice_reads() {
    let mut buf = LinkBuffer::new();
    buf.write_binary(b"first");
    buf.flush();
    let mut s = buf.slice(5).unwrap();
    // The buffer writes into the rest of the same node...
    buf.write_binary(b"second");
    buf.flush();
    assert_eq!(buf.node_count(), 1);
    // ...and the slice's own writes go to a node of its own.
    s.write_binary(b"+more");
    s.flush();
    assert_eq!(all(&mut s), b"first+more");
    assert_eq!(all(&mut buf), b"second");
}

#[test]
fn slice_of_a_slice_and_writes_after_it() {
    let mut buf = chain(&[b"abcdef", b"ghij"]);
    let mut s = buf.slice(8).unwrap();
    let mut t = s.slice(7).unwrap();
    assert_eq!(all(&mut t), b"abcdefg");
    assert_eq!(all(&mut s), b"h");
    assert_eq!(all(&mut buf), b"ij");
}

#[test]
fn next_bytes_within_a_node_points_into_it() {
    let mut buf = LinkBuffer::new();
    buf.write_binary(b"....payload....");
    buf.write_binary(&[0; 4096]); // more frames of the same read
    buf.flush();
    let node = buf.peek(15).unwrap().as_ptr() as usize;
    buf.skip(4).unwrap();
    let b = buf.next_bytes(7).unwrap();
    assert_eq!(&b[..], b"payload");
    assert_eq!(b.as_ptr() as usize, node + 4);
    buf.skip(4 + 4096).unwrap();
    buf.release();
    drop(buf);
    assert_eq!(&b[..], b"payload", "the view outlives the buffer");
}

#[test]
fn next_bytes_reuses_the_cached_view_and_sees_new_flushes() {
    let mut buf = LinkBuffer::new();
    // One node with room for both flushes, each with enough bytes behind
    // its first view for that view to be a shared one.
    buf.malloc(12_000);
    buf.malloc_ack(0).unwrap();
    let tail = [b'x'; 4096];
    buf.write_binary(b"aaaabbbb");
    buf.write_binary(&tail);
    buf.flush();
    let a = buf.next_bytes(4).unwrap();
    buf.write_binary(b"cccc"); // same node, after the cached view
    buf.write_binary(&tail);
    buf.flush();
    let b = buf.next_bytes(4).unwrap();
    buf.skip(4096).unwrap();
    let c = buf.next_bytes(4).unwrap();
    assert_eq!(
        (&a[..], &b[..], &c[..]),
        (&b"aaaa"[..], &b"bbbb"[..], &b"cccc"[..])
    );
    assert_eq!(a.as_ptr().wrapping_add(8 + 4096), c.as_ptr(), "one node");
}

#[test]
fn short_next_bytes_at_the_end_of_a_read_is_copied() {
    let mut buf = LinkBuffer::new();
    buf.write_binary(b"head:short frame");
    buf.flush();
    let node = buf.peek(1).unwrap().as_ptr() as usize;
    buf.skip(5).unwrap();
    let b = buf.next_bytes(5).unwrap();
    assert_eq!(&b[..], b"short");
    let p = b.as_ptr() as usize;
    assert!(
        !(node..node + 16).contains(&p),
        "copied, so it pins no node"
    );
    // A long run stays a view, short or not what follows.
    let mut buf = LinkBuffer::new();
    buf.write_binary(&[3; 2000]);
    buf.flush();
    let node = buf.peek(1).unwrap().as_ptr() as usize;
    let b = buf.next_bytes(2000).unwrap();
    assert_eq!(b.as_ptr() as usize, node);
    // Copies of many reads (several arena chunks) stay correct.
    for i in 0..200u32 {
        let mut buf = LinkBuffer::new();
        buf.write_binary(&[i as u8; 1000]);
        buf.flush();
        let v = buf.next_bytes(1000).unwrap();
        assert!(v.iter().all(|&x| x == i as u8));
    }
}

#[test]
fn next_bytes_across_nodes_copies() {
    let mut buf = chain(&[b"ab", b"cd", b"ef"]);
    let b = buf.next_bytes(5).unwrap();
    assert_eq!(&b[..], b"abcde");
    drop(buf);
    assert_eq!(&b[..], b"abcde");
}

#[test]
fn views_never_cover_unflushed_bytes() {
    let mut buf = LinkBuffer::new();
    buf.write_binary(b"ab");
    buf.flush();
    buf.write_binary(b"cd");
    let v = buf.next_bytes(2).unwrap();
    // malloc_ack may rewrite the unflushed "cd" while the view lives.
    buf.malloc_ack(0).unwrap();
    buf.write_binary(b"XY");
    buf.flush();
    assert_eq!(&v[..], b"ab");
    assert_eq!(all(&mut buf), b"XY");
}

#[test]
fn views_read_on_another_thread_while_the_writer_fills_the_node() {
    let mut buf = LinkBuffer::new();
    let rounds = if under_valgrind() { 50 } else { 500 };
    let (tx, rx) = std::sync::mpsc::channel::<(Bytes, u8)>();
    let reader = std::thread::spawn(move || {
        let mut n = 0;
        for (b, v) in rx {
            assert!(b.iter().all(|&x| x == v));
            n += 1;
        }
        n
    });
    for i in 0..rounds {
        let v = i as u8;
        buf.write_binary(&[v; 7]);
        buf.flush();
        tx.send((buf.next_bytes(7).unwrap(), v)).unwrap();
        if i % 64 == 63 {
            buf.release();
        }
    }
    drop(tx);
    assert_eq!(reader.join().unwrap(), rounds);
}

// ---------------------------------------------------------------------------
// readable_vectored

#[test]
fn readable_vectored_gives_one_slice_per_node_and_stops_at_len() {
    let mut buf = chain(&[b"ab", b"cde", b"f"]);
    buf.write_binary(b"unflushed");
    let mut iov = [IoSlice::new(&[]); 8];
    let n = buf.readable_vectored(&mut iov);
    let got: Vec<&[u8]> = iov[..n].iter().map(|s| &**s).collect();
    assert_eq!(got, [&b"ab"[..], b"cde", b"f"]);

    let mut two = [IoSlice::new(&[]); 2];
    assert_eq!(buf.readable_vectored(&mut two), 2);
    let mut none: [IoSlice<'_>; 0] = [];
    assert_eq!(buf.readable_vectored(&mut none), 0);

    buf.skip(3).unwrap();
    let mut iov = [IoSlice::new(&[]); 8];
    let n = buf.readable_vectored(&mut iov);
    assert_eq!(n, 2);
    assert_eq!(&*iov[0], b"de");
}

#[test]
fn readable_vectored_writes_out_through_io_write() {
    let mut buf = chain(&[b"hello ", b"vectored ", b"world"]);
    let mut out: Vec<u8> = Vec::new();
    let mut iov = [IoSlice::new(&[]); 4];
    let n = buf.readable_vectored(&mut iov);
    let written = io::Write::write_vectored(&mut out, &iov[..n]).unwrap();
    buf.skip(written).unwrap();
    buf.release();
    assert_eq!(out, b"hello vectored world");
    assert_eq!(buf.node_count(), 0);
}

// ---------------------------------------------------------------------------
// malloc / malloc_ack

#[test]
fn malloc_is_contiguous_and_counted() {
    let mut buf = LinkBuffer::new();
    assert!(buf.malloc(0).is_empty());
    buf.malloc(3).copy_from_slice(b"abc");
    assert_eq!(buf.malloc_len(), 3);
    let big = buf.malloc(BLOCK_SIZE * 2);
    assert_eq!(big.len(), BLOCK_SIZE * 2);
    big.fill(b'z');
    assert_eq!(buf.malloc_len(), 3 + BLOCK_SIZE * 2);
    buf.flush();
    assert_eq!(buf.next(3).unwrap(), b"abc");
    assert!(buf.next(BLOCK_SIZE * 2).unwrap().iter().all(|&b| b == b'z'));
}

#[test]
// Not run under valgrind (`.ci/test` skips it by name and says so): a
// node above MAX_NODE is 9 MiB of shadow memory traffic, and the case cannot
// be scaled down.
fn malloc_above_max_node_is_one_contiguous_node() {
    let mut buf = LinkBuffer::new();
    let n = MAX_NODE + 1000;
    let m = buf.malloc(n);
    m[0] = 1;
    m[n - 1] = 2;
    buf.flush();
    assert_eq!(buf.node_count(), 1);
    let p = buf.peek(n).unwrap();
    assert_eq!((p[0], p[n - 1]), (1, 2));
}

#[test]
fn malloc_ack_keeps_a_prefix_of_the_unflushed_bytes() {
    let mut buf = LinkBuffer::new();
    buf.write_binary(b"kept");
    buf.flush();
    buf.malloc(4).copy_from_slice(b"1234");
    buf.write_binary(b"5678");
    assert_eq!(
        buf.malloc_ack(9),
        Err(Error::AckTooLarge {
            requested: 9,
            available: 8
        })
    );
    assert_eq!(buf.malloc_len(), 8, "a failed ack changes nothing");
    buf.malloc_ack(6).unwrap();
    assert_eq!(buf.malloc_len(), 6);
    buf.write_binary(b"!");
    buf.flush();
    assert_eq!(all(&mut buf), b"kept123456!");
}

#[test]
fn malloc_ack_cuts_across_nodes_and_linked_bytes() {
    let mut buf = LinkBuffer::new();
    buf.write_binary(b"a");
    buf.write_bytes(Bytes::from(vec![b'L'; LINK_MIN]));
    let m = buf.malloc(BLOCK_SIZE * 2);
    m.fill(b'm');
    assert!(buf.node_count() >= 3);
    buf.malloc_ack(3).unwrap();
    assert_eq!(buf.node_count(), 2);
    buf.malloc_ack(0).unwrap();
    assert_eq!(buf.malloc_len(), 0);
    buf.write_binary(b"b");
    buf.flush();
    assert_eq!(all(&mut buf), b"b");
}

#[test]
fn malloc_ack_zero_rewinds_for_reuse() {
    let mut buf = LinkBuffer::new();
    let room = buf.malloc(100);
    room[..2].copy_from_slice(b"ok");
    buf.malloc_ack(2).unwrap();
    buf.malloc(100).fill(0);
    buf.malloc_ack(2).unwrap();
    buf.flush();
    assert_eq!(all(&mut buf), b"ok");
    assert_eq!(buf.node_count(), 1);
}

// ---------------------------------------------------------------------------
// write_binary / write_bytes

#[test]
fn write_binary_fills_nodes_then_spans_new_ones() {
    let mut buf = LinkBuffer::new();
    let data = pattern(BLOCK_SIZE * 3 + 17, 9);
    for chunk in data.chunks(1000) {
        buf.write_binary(chunk);
    }
    buf.flush();
    assert!(buf.node_count() >= 2);
    assert_eq!(all(&mut buf), data);
}

#[test]
fn write_binary_caps_nodes_at_max_node() {
    let n = if under_valgrind() {
        MAX_NODE / 4
    } else {
        2 * MAX_NODE + 5
    };
    let data = pattern(n, 3);
    let mut buf = LinkBuffer::new();
    buf.write_binary(&data);
    buf.flush();
    assert_eq!(buf.node_count(), n.div_ceil(MAX_NODE));
    assert_eq!(buf.next(n).unwrap(), &data[..]);
}

#[test]
fn write_bytes_links_large_payloads_and_copies_small_ones() {
    let large = Bytes::from(pattern(LINK_MIN, 5));
    let small = Bytes::from_static(b"small");
    let mut buf = LinkBuffer::new();
    buf.write_bytes(small.clone());
    buf.write_bytes(large.clone());
    buf.write_bytes(small);
    buf.flush();
    assert_eq!(buf.node_count(), 3);
    buf.skip(5).unwrap();
    assert_eq!(
        buf.peek(LINK_MIN).unwrap().as_ptr(),
        large.as_ptr(),
        "linked"
    );
    let v = buf.next_bytes(LINK_MIN).unwrap();
    assert_eq!(v, large);
    assert_eq!(all(&mut buf), b"small");
    buf.write_bytes(Bytes::new());
    assert_eq!(buf.unflushed_len(), 0);
}

// ---------------------------------------------------------------------------
// append

#[test]
fn append_links_readable_and_unflushed_bytes_of_the_other_buffer() {
    let mut other = LinkBuffer::new();
    other.write_binary(b"read");
    other.flush();
    other.write_binary(b"able");
    let node = other.peek(4).unwrap().as_ptr();
    let mut buf = chain(&[b"first "]);
    buf.append(other);
    assert_eq!(buf.len(), 6, "appended bytes wait for flush");
    assert_eq!(buf.unflushed_len(), 8);
    buf.flush();
    buf.skip(6).unwrap();
    assert_eq!(buf.peek(8).unwrap().as_ptr(), node, "linked, not copied");
    // The other buffer's last node is now ours to keep writing.
    buf.write_binary(b"!");
    buf.flush();
    assert_eq!(buf.node_count(), 1);
    assert_eq!(all(&mut buf), b"readable!");
}

#[test]
fn append_of_partly_read_and_empty_buffers() {
    let mut other = chain(&[b"xxab", b"cd"]);
    other.skip(2).unwrap();
    let mut buf = LinkBuffer::new();
    buf.append(LinkBuffer::new());
    assert_eq!(buf.node_count(), 0);
    buf.append(other);
    let mut drained = chain(&[b"gone"]);
    drained.skip(4).unwrap();
    buf.append(drained);
    buf.flush();
    assert_eq!(buf.node_count(), 2);
    assert_eq!(all(&mut buf), b"abcd");
}

#[test]
fn append_own_slice_rotates_the_content() {
    let mut buf = chain(&[b"headtail"]);
    let head = buf.slice(4).unwrap();
    buf.append(head);
    buf.flush();
    assert_eq!(all(&mut buf), b"tailhead");
}

#[test]
fn append_many_nodes() {
    let mut buf = LinkBuffer::new();
    let mut want = Vec::new();
    for i in 0..200u8 {
        let mut b = LinkBuffer::new();
        b.write_binary(&[i; 3]);
        b.flush();
        want.extend_from_slice(&[i; 3]);
        buf.append(b);
    }
    buf.flush();
    assert_eq!(buf.node_count(), 200);
    let n = want.len();
    assert_eq!(buf.peek(n).unwrap(), &want[..]);
    assert_eq!(buf.next_bytes(n).unwrap(), &want[..]);
}

// ---------------------------------------------------------------------------
// book / book_ack

#[test]
fn book_and_ack_publish_what_was_read() {
    let mut buf = LinkBuffer::new();
    let space = buf.book(10);
    assert_eq!(
        space.len(),
        MIN_READ_SIZE - NODE_HEADER,
        "a fresh node less its header"
    );
    space[..5].copy_from_slice(b"bytes");
    buf.book_ack(5);
    assert_eq!(buf.len(), 5);
    assert_eq!(buf.unflushed_len(), 0);
    assert_eq!(buf.next(5).unwrap(), b"bytes");
}

#[test]
fn book_after_malloc_books_after_it_and_ack_flushes_both() {
    let mut buf = LinkBuffer::new();
    buf.malloc(3).copy_from_slice(b"abc");
    let space = buf.book(1);
    space[..2].copy_from_slice(b"de");
    buf.book_ack(2);
    assert_eq!(buf.len(), 5);
    assert_eq!(buf.node_count(), 1);
    assert_eq!(all(&mut buf), b"abcde");
}

#[test]
fn book_honours_min_above_the_read_size() {
    let mut buf = LinkBuffer::new();
    let space = buf.book(100_000);
    assert!(space.len() >= 100_000);
    space.fill(7);
    buf.book_ack(100_000);
    assert_eq!(buf.len(), 100_000);
}

#[test]
fn book_reuses_the_tail_node() {
    let mut buf = LinkBuffer::new();
    let a = buf.book(1).as_ptr();
    buf.book_ack(100);
    let b = buf.book(1).as_ptr();
    assert_eq!(b, a.wrapping_add(100));
    buf.book_ack(0);
    assert_eq!(buf.node_count(), 1);
}

#[test]
fn book_carries_a_few_unread_bytes_into_its_new_node() {
    let mut buf = LinkBuffer::new();
    let space = buf.book(1);
    let n = space.len();
    space.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    buf.book_ack(n); // the node is full
    buf.skip(n - 10).unwrap();
    let view = buf.next_bytes(3).unwrap(); // a view of the old node
    let tail = buf.peek(7).unwrap().to_vec();
    let space = buf.book(1);
    space[..5].copy_from_slice(b"fresh");
    buf.book_ack(5);
    assert_eq!(buf.node_count(), 1, "the 7 unread bytes moved along");
    let frame = buf.peek(12).unwrap();
    assert_eq!(&frame[..7], &tail[..]);
    assert_eq!(&frame[7..], b"fresh");
    let want: Vec<u8> = (n - 10..n - 7).map(|i| i as u8).collect();
    assert_eq!(&view[..], &want[..], "views of the old node stay valid");
}

#[test]
fn book_does_not_carry_large_remainders() {
    let mut buf = LinkBuffer::new();
    let n = buf.book(1).len();
    buf.book_ack(n);
    buf.skip(n - 5000).unwrap(); // above the 4 KiB carry limit
    buf.book(1);
    buf.book_ack(1);
    assert_eq!(buf.node_count(), 2);
    assert_eq!(buf.len(), 5001);
}

#[test]
fn read_size_doubles_on_full_reads_and_shrinks_on_small_ones() {
    let mut buf = LinkBuffer::new();
    assert_eq!(buf.read_size(), MIN_READ_SIZE);
    let mut sizes = Vec::new();
    for _ in 0..12 {
        let n = buf.book(1).len();
        buf.book_ack(n);
        buf.skip(n).unwrap();
        buf.release();
        sizes.push(buf.read_size());
    }
    assert_eq!(sizes[0], 2 * MIN_READ_SIZE);
    assert_eq!(sizes[1], 4 * MIN_READ_SIZE);
    assert_eq!(*sizes.last().unwrap(), MAX_READ_SIZE, "capped: {sizes:?}");
    // One small read does not shrink; two in a row halve it.
    buf.book(1);
    buf.book_ack(10);
    assert_eq!(buf.read_size(), MAX_READ_SIZE);
    buf.book(1);
    buf.book_ack(10);
    assert_eq!(buf.read_size(), MAX_READ_SIZE / 2);
    for _ in 0..40 {
        buf.book(1);
        buf.book_ack(1);
    }
    assert_eq!(buf.read_size(), MIN_READ_SIZE);
}

#[test]
#[should_panic(expected = "exceeds")]
fn book_ack_beyond_the_booking_panics() {
    let mut buf = LinkBuffer::new();
    let n = buf.book(1).len();
    buf.book_ack(n + 1);
}

#[test]
#[should_panic(expected = "exceeds")]
fn a_write_cancels_the_booking() {
    let mut buf = LinkBuffer::new();
    buf.book(1);
    buf.write_binary(b"x");
    buf.book_ack(1);
}

#[test]
fn book_ack_zero_without_booking_just_flushes() {
    let mut buf = LinkBuffer::new();
    buf.write_binary(b"x");
    buf.book_ack(0);
    assert_eq!(buf.len(), 1);
}

// ---------------------------------------------------------------------------
// memory bounds

#[test]
fn a_large_tail_node_is_not_kept_for_small_writes() {
    let mut buf = LinkBuffer::new();
    buf.malloc(600 << 10).fill(1); // a 1 MiB class node with spare room
    buf.flush();
    buf.write_binary(b"small");
    buf.flush();
    assert_eq!(buf.node_count(), 2, "the small write got a node of its own");
    buf.skip(600 << 10).unwrap();
    buf.release();
    assert!(buf.held_bytes() <= 2 * BLOCK_SIZE, "{}", buf.held_bytes());
    assert_eq!(all(&mut buf), b"small");
}

#[test]
fn book_does_not_keep_a_large_node_for_small_reads() {
    let mut buf = LinkBuffer::new();
    // Grow the read size, leaving a big node half filled and unread.
    let big = loop {
        let space = buf.book(1);
        let (n, at) = (space.len(), space.as_ptr() as usize);
        if n == MAX_READ_SIZE - NODE_HEADER {
            buf.book_ack(n / 2);
            break at..at + n;
        }
        buf.book_ack(n);
        let len = buf.len();
        buf.skip(len).unwrap();
        buf.release();
    };
    while buf.read_size() > MIN_READ_SIZE {
        buf.book(1);
        buf.book_ack(1);
    }
    let at = buf.book(1).as_ptr() as usize;
    assert!(!big.contains(&at), "a small read went into the big node");
    buf.book_ack(1);
}

#[test]
fn an_idle_connection_pair_holds_no_heap_memory() {
    let mut input = LinkBuffer::new();
    let mut output = LinkBuffer::new();
    for _ in 0..3 {
        let space = input.book(1);
        space[..4].copy_from_slice(b"ping");
        input.book_ack(4);
        let req = input.next(4).unwrap().to_vec();
        output.write_binary(&req);
        output.flush();
        let mut iov = [IoSlice::new(&[]); 4];
        let n = output.readable_vectored(&mut iov);
        let sent: usize = iov[..n].iter().map(|s| s.len()).sum();
        output.skip(sent).unwrap();
        input.release();
        output.release();
    }
    assert_eq!(input.held_bytes() + output.held_bytes(), 0);
    assert!(
        std::mem::size_of::<LinkBuffer>() <= 120,
        "{}",
        std::mem::size_of::<LinkBuffer>()
    );
}

// ---------------------------------------------------------------------------
// bytes::Buf and bytes::BufMut

#[test]
fn buf_reads_across_nodes() {
    let mut buf = chain(&[&[0, 0], &[1, 2, 0xAB], &[0xCD, 9]]);
    assert_eq!(buf.remaining(), 7);
    assert_eq!(buf.chunk(), &[0, 0]);
    assert_eq!(buf.get_u32(), 0x0102);
    assert_eq!(buf.chunk(), &[0xAB]);
    assert_eq!(buf.get_u16(), 0xABCD);
    assert_eq!(buf.get_u8(), 9);
    assert!(!buf.has_remaining());
    assert_eq!(buf.chunk(), b"");
}

#[test]
fn buf_chunk_ignores_unflushed_bytes() {
    let mut buf = LinkBuffer::new();
    buf.write_binary(b"ab");
    assert_eq!(buf.chunk(), b"");
    buf.flush();
    buf.write_binary(b"cd");
    assert_eq!(buf.chunk(), b"ab");
}

#[test]
fn buf_chunks_vectored_and_copy_to_bytes() {
    let mut buf = chain(&[b"abc", b"defg"]);
    let mut iov = [IoSlice::new(&[]); 4];
    assert_eq!(buf.chunks_vectored(&mut iov), 2);
    let b = buf.copy_to_bytes(2);
    assert_eq!(&b[..], b"ab");
    let c = buf.copy_to_bytes(3);
    assert_eq!(&c[..], b"cde");
}

#[test]
#[should_panic(expected = "advance")]
fn buf_advance_past_the_end_panics_as_the_trait_says() {
    let mut buf = chain(&[b"ab"]);
    Buf::advance(&mut buf, 3);
}

#[test]
fn buf_mut_writes_through_chunk_mut_and_put() {
    let mut buf = LinkBuffer::new();
    buf.put_u32(0xDEAD_BEEF);
    buf.put_slice(b"xyz");
    buf.put_bytes(b'-', 3);
    let chunk = buf.chunk_mut();
    assert!(chunk.len() > 0);
    chunk[..2].copy_from_slice(b"!!");
    // SAFETY: the two bytes were just written.
    unsafe { buf.advance_mut(2) };
    assert_eq!(buf.unflushed_len(), 12);
    assert!(buf.remaining_mut() > 1 << 40);
    buf.flush();
    assert_eq!(all(&mut buf), b"\xDE\xAD\xBE\xEFxyz---!!");
}

#[test]
fn buf_mut_spans_nodes() {
    let mut buf = LinkBuffer::new();
    let data = pattern(3 * BLOCK_SIZE + 1, 7);
    for &b in &data {
        buf.put_u8(b);
    }
    buf.flush();
    assert_eq!(buf.node_count(), 4);
    assert_eq!(all(&mut buf), data);
}

// ---------------------------------------------------------------------------
// errors

#[test]
fn errors_display_and_convert_to_io_errors() {
    let cases = [
        (
            Error::Insufficient {
                requested: 9,
                available: 2,
            },
            io::ErrorKind::UnexpectedEof,
            "asked for 9 bytes but only 2 are readable",
        ),
        (
            Error::DelimiterNotFound,
            io::ErrorKind::UnexpectedEof,
            "delimiter not found in the readable bytes",
        ),
        (
            Error::InvalidUtf8,
            io::ErrorKind::InvalidData,
            "bytes are not valid UTF-8",
        ),
        (
            Error::AckTooLarge {
                requested: 5,
                available: 4,
            },
            io::ErrorKind::InvalidInput,
            "malloc_ack(5) exceeds the 4 bytes written since the last flush",
        ),
    ];
    for (e, kind, text) in cases {
        assert_eq!(e.to_string(), text);
        assert_eq!(
            e.is_incomplete(),
            kind == io::ErrorKind::UnexpectedEof,
            "{e}"
        );
        let io: io::Error = e.clone().into();
        assert_eq!(io.kind(), kind);
        assert_eq!(io.to_string(), text);
    }
}
