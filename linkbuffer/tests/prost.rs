//! prost encodes into a `LinkBuffer` through `BufMut` and decodes from it
//! through `Buf`; a `bytes` field decodes as a view into the node.

use bytes::{Buf, Bytes};
use ferropoll_linkbuffer::LinkBuffer;
use prost::Message;

#[derive(Clone, PartialEq, prost::Message)]
struct Request {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    method: String,
    #[prost(bytes = "bytes", tag = "3")]
    payload: Bytes,
    #[prost(message, optional, tag = "4")]
    inner: Option<Inner>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Inner {
    #[prost(bytes = "bytes", tag = "1")]
    blob: Bytes,
    #[prost(sint32, repeated, tag = "2")]
    values: Vec<i32>,
}

fn request(payload_len: usize) -> Request {
    Request {
        id: 0x1234_5678_9abc,
        method: "Echo/Say".into(),
        payload: Bytes::from((0..payload_len).map(|i| i as u8).collect::<Vec<_>>()),
        inner: Some(Inner {
            blob: Bytes::from_static(b"inner blob"),
            values: vec![-1, 0, 1, i32::MAX, i32::MIN],
        }),
    }
}

/// The address range of the node the next readable bytes lie in.
fn first_node(buf: &LinkBuffer) -> std::ops::Range<usize> {
    let c = buf.chunk();
    let p = c.as_ptr() as usize;
    p..p + c.len()
}

#[test]
fn short_fields_at_the_end_of_a_read_are_copied_out_of_the_node() {
    let msg = request(300);
    let mut buf = LinkBuffer::new();
    msg.encode_length_delimited(&mut buf).unwrap();
    buf.flush();
    let node = first_node(&buf);
    let got = Request::decode_length_delimited(&mut buf).unwrap();
    assert_eq!(got, msg);
    for field in [&got.payload, &got.inner.as_ref().unwrap().blob] {
        let p = field.as_ptr() as usize;
        assert!(
            !node.contains(&p),
            "a short field of the last message pins the node"
        );
    }
    buf.release();
    drop(buf);
    assert_eq!(got, msg);
}

#[test]
fn round_trip_is_zero_copy_for_bytes_fields() {
    // A payload above the short-copy limit: decoded as a view, and the
    // view's cached `Bytes` then covers the nested field after it.
    let msg = request(5000);
    let mut buf = LinkBuffer::new();
    msg.encode_length_delimited(&mut buf).unwrap();
    assert_eq!(buf.unflushed_len(), msg.encoded_len() + 2);
    buf.flush();
    assert_eq!(buf.node_count(), 1);

    let node = first_node(&buf);
    let got = Request::decode_length_delimited(&mut buf).unwrap();
    assert_eq!(got, msg);
    assert!(buf.is_empty());
    let p = got.payload.as_ptr() as usize;
    assert!(node.contains(&p), "payload was copied out of the node");
    let inner = got.inner.as_ref().unwrap();
    assert!(
        node.contains(&(inner.blob.as_ptr() as usize)),
        "nested bytes field too"
    );

    buf.release();
    drop(buf);
    assert_eq!(got, msg, "decoded views outlive the buffer");
}

#[test]
fn many_messages_back_to_back_across_nodes() {
    let msgs: Vec<Request> = (0..50).map(|i| request(i * 97)).collect();
    let mut buf = LinkBuffer::new();
    for m in &msgs {
        m.encode_length_delimited(&mut buf).unwrap();
    }
    buf.flush();
    assert!(buf.node_count() > 1);
    for m in &msgs {
        let got = Request::decode_length_delimited(&mut buf).unwrap();
        assert_eq!(&got, m);
    }
    assert!(buf.is_empty());
}

#[test]
fn decode_of_a_slice_per_frame() {
    let msg = request(300);
    let mut buf = LinkBuffer::new();
    for _ in 0..3 {
        let len = msg.encoded_len();
        buf.malloc(4).copy_from_slice(&(len as u32).to_be_bytes());
        msg.encode(&mut buf).unwrap();
    }
    buf.flush();
    for _ in 0..3 {
        let len = u32::from_be_bytes(buf.next(4).unwrap().try_into().unwrap()) as usize;
        let frame = buf.slice(len).unwrap();
        let got = Request::decode(frame).unwrap();
        assert_eq!(got, msg);
    }
    buf.release();
    assert_eq!(buf.node_count(), 0);
}

#[test]
fn truncated_input_is_a_decode_error_not_a_panic() {
    let msg = request(100);
    let mut buf = LinkBuffer::new();
    msg.encode(&mut buf).unwrap();
    buf.flush();
    let len = buf.len();
    let mut part = buf.slice(len - 10).unwrap();
    assert!(Request::decode(&mut part).is_err());
}
