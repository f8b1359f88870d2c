//! Generated example services and in-memory implementations shared by the tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use ferropoll_rpc::{Context, Status};
use parking_lot::Mutex;

pub mod echo {
    include!(concat!(env!("OUT_DIR"), "/echo.rs"));
}

pub mod kv {
    include!(concat!(env!("OUT_DIR"), "/kv.rs"));
}

/// Echo, with trigger payloads: `panic` panics, `meta` answers the request's
/// metadata entry `k`, `peer` the peer address, `ctx` "service/method/seq".
#[derive(Default)]
pub struct EchoImpl {
    pub calls: AtomicUsize,
}

impl echo::Echo for EchoImpl {
    fn echo(&self, ctx: &Context, req: echo::EchoRequest) -> Result<echo::EchoResponse, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let payload = match &req.payload[..] {
            b"panic" => panic!("echo was asked to panic"),
            b"meta" => {
                ctx.set_response_metadata("echoed", ctx.metadata().get("k").unwrap_or(""));
                Bytes::from(ctx.metadata().get("k").unwrap_or("").to_owned())
            }
            b"peer" => Bytes::from(ctx.peer().to_string()),
            b"ctx" => Bytes::from(format!(
                "{}/{}/{}/{}",
                ctx.service(),
                ctx.method(),
                ctx.seq(),
                ctx.deadline().is_some()
            )),
            _ => req.payload,
        };
        Ok(echo::EchoResponse { payload })
    }

    /// Echoes each message; a `panic` message panics mid-stream.
    fn echo_stream(
        &self,
        _: &Context,
        requests: ferropoll_rpc::RecvStream<echo::EchoRequest>,
        mut responses: ferropoll_rpc::SendSink<echo::EchoResponse>,
    ) -> Result<(), Status> {
        for req in requests {
            let req = req?;
            self.calls.fetch_add(1, Ordering::SeqCst);
            if &req.payload[..] == b"panic" {
                panic!("echo_stream was asked to panic");
            }
            responses.send(&echo::EchoResponse {
                payload: req.payload,
            })?;
        }
        Ok(())
    }
}

/// An in-memory key-value store.
#[derive(Default)]
pub struct MemKv {
    map: Mutex<BTreeMap<String, Bytes>>,
}

impl kv::Kv for MemKv {
    fn get(&self, _: &Context, req: kv::GetRequest) -> Result<kv::GetResponse, Status> {
        match self.map.lock().get(&req.key) {
            Some(v) => Ok(kv::GetResponse { value: v.clone() }),
            None => Err(Status::not_found(format!("no key {:?}", req.key))),
        }
    }

    fn put(&self, _: &Context, req: kv::PutRequest) -> Result<kv::PutResponse, Status> {
        if req.key.is_empty() {
            return Err(Status::invalid_argument("empty key"));
        }
        let mut map = self.map.lock();
        if req.if_absent && map.contains_key(&req.key) {
            return Err(Status::already_exists(format!("key {:?}", req.key)));
        }
        let replaced = map.insert(req.key, req.value).is_some();
        Ok(kv::PutResponse { replaced })
    }

    fn delete(&self, _: &Context, req: kv::DeleteRequest) -> Result<kv::DeleteResponse, Status> {
        match self.map.lock().remove(&req.key) {
            Some(value) => Ok(kv::DeleteResponse { value }),
            None => Err(Status::not_found(format!("no key {:?}", req.key))),
        }
    }

    fn list(&self, _: &Context, req: kv::ListRequest) -> Result<kv::ListResponse, Status> {
        let limit = if req.limit == 0 {
            100
        } else {
            req.limit as usize
        };
        let map = self.map.lock();
        let mut entries = Vec::new();
        let mut truncated = false;
        for (k, v) in map.range(req.start_after.clone()..) {
            if *k == req.start_after || !k.starts_with(&req.prefix) {
                continue;
            }
            if entries.len() == limit {
                truncated = true;
                break;
            }
            entries.push(kv::Entry {
                key: k.clone(),
                value: v.clone(),
            });
        }
        Ok(kv::ListResponse { entries, truncated })
    }
}

/// The wire bytes of one well-formed `echo.Echo/Echo` request frame, for
/// tests that write raw bytes to a server socket.
pub fn echo_request_bytes(seq: u64, payload: &[u8]) -> Vec<u8> {
    let req = echo::EchoRequest {
        payload: Bytes::copy_from_slice(payload),
    };
    request_bytes(seq, "echo.Echo", "Echo", &req)
}

/// The wire bytes of one well-formed request frame of `service/method`.
pub fn request_bytes(seq: u64, service: &str, method: &str, req: &impl prost::Message) -> Vec<u8> {
    use ferropoll_rpc::codec::{self, RequestHead};
    use ferropoll_rpc::{Limits, LinkBuffer, Metadata};
    let mut buf = LinkBuffer::new();
    let md = Metadata::new();
    let head = RequestHead {
        seq,
        service,
        method,
        timeout: None,
        metadata: &md,
        oneway: false,
    };
    codec::encode_request(&mut buf, &Limits::default(), &head, req).unwrap();
    buf.flush();
    buf.next(buf.len()).unwrap().to_vec()
}
