//! The example RPC services, generated at build time from
//! `proto/protos/echo.proto` and `proto/protos/kv.proto` (see `build.rs`),
//! and ready-made implementations of them for the example servers.
//!
//! ```
//! use std::sync::Arc;
//! use ferropoll_examples::pb::{echo, kv, EchoService, MemKv};
//! use ferropoll_rpc::{Client, ClientOptions, ServerEngine};
//!
//! let mut engine = ServerEngine::new();
//! engine.register(echo::EchoServer::new(EchoService))?;
//! engine.register(kv::KvServer::new(MemKv::default()))?;
//! let client = Client::in_process(Arc::new(engine), ClientOptions::default());
//!
//! let kv = kv::KvClient::new(client);
//! let err = kv.get(&kv::GetRequest { key: "nope".into() }).unwrap_err();
//! assert_eq!(err.code(), ferropoll_rpc::Code::NotFound);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;
use ferropoll_rpc::{Context, Status};
use parking_lot::RwLock;

/// `echo.Echo`: messages, the `Echo` server trait, `EchoServer`, `EchoClient`.
pub mod echo {
    include!(concat!(env!("OUT_DIR"), "/echo.rs"));
}

/// `kv.Kv`: messages, the `Kv` server trait, `KvServer`, `KvClient`.
pub mod kv {
    include!(concat!(env!("OUT_DIR"), "/kv.rs"));
}

/// Answers every request with its payload (a zero-copy view of the request).
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoService;

impl echo::Echo for EchoService {
    fn echo(&self, _: &Context, req: echo::EchoRequest) -> Result<echo::EchoResponse, Status> {
        Ok(echo::EchoResponse {
            payload: req.payload,
        })
    }

    /// Answers each request with one response of the same payload, in order.
    fn echo_stream(
        &self,
        _: &Context,
        requests: ferropoll_rpc::RecvStream<echo::EchoRequest>,
        mut responses: ferropoll_rpc::SendSink<echo::EchoResponse>,
    ) -> Result<(), Status> {
        for req in requests {
            responses.send(&echo::EchoResponse {
                payload: req?.payload,
            })?;
        }
        Ok(())
    }
}

/// The same answers through async handlers (`rpc-server --handlers
/// async`): ready at their first poll, so served inline on the loop thread.
impl echo::EchoAsync for EchoService {
    async fn echo(
        &self,
        _: &Context,
        req: echo::EchoRequest,
    ) -> Result<echo::EchoResponse, Status> {
        Ok(echo::EchoResponse {
            payload: req.payload,
        })
    }

    async fn echo_stream(
        &self,
        _: &Context,
        mut requests: ferropoll_rpc::RecvStream<echo::EchoRequest>,
        mut responses: ferropoll_rpc::SendSink<echo::EchoResponse>,
    ) -> Result<(), Status> {
        while let Some(req) = requests.message().await {
            responses
                .send_async(&echo::EchoResponse {
                    payload: req?.payload,
                })
                .await?;
        }
        Ok(())
    }
}

/// `echo.Echo` through async handlers that first await a tokio timer:
/// what an async handler that calls a tokio-based library looks like
/// (`rpc-server --handlers async --tokio-delay-ms N`). The handlers are
/// polled on the server's loop thread, which has no tokio context, so the
/// timer is created and awaited in a task on the runtime beside the server
/// and the handler awaits its join handle.
#[derive(Debug, Clone)]
pub struct DelayedEcho {
    /// The runtime the timers run on.
    pub rt: tokio::runtime::Handle,
    /// How long each answer waits.
    pub delay: std::time::Duration,
}

impl DelayedEcho {
    async fn wait(&self) -> Result<(), Status> {
        let delay = self.delay;
        self.rt
            .spawn(async move { tokio::time::sleep(delay).await })
            .await
            .map_err(|e| Status::internal(format!("the timer task failed: {e}")))
    }
}

impl echo::EchoAsync for DelayedEcho {
    async fn echo(
        &self,
        _: &Context,
        req: echo::EchoRequest,
    ) -> Result<echo::EchoResponse, Status> {
        self.wait().await?;
        Ok(echo::EchoResponse {
            payload: req.payload,
        })
    }

    async fn echo_stream(
        &self,
        _: &Context,
        mut requests: ferropoll_rpc::RecvStream<echo::EchoRequest>,
        mut responses: ferropoll_rpc::SendSink<echo::EchoResponse>,
    ) -> Result<(), Status> {
        while let Some(req) = requests.message().await {
            let req = req?;
            self.wait().await?;
            responses
                .send_async(&echo::EchoResponse {
                    payload: req.payload,
                })
                .await?;
        }
        Ok(())
    }
}

/// The most entries one `List` returns (and its default limit).
pub const MAX_LIST: usize = 1000;

/// An in-memory key-value store implementing `kv.Kv`.
///
/// Errors: NOT_FOUND for a missing key (`Get`, `Delete`), ALREADY_EXISTS
/// for `Put` with `if_absent` on a present key, INVALID_ARGUMENT for an
/// empty key.
#[derive(Debug, Default)]
pub struct MemKv {
    map: RwLock<BTreeMap<String, Bytes>>,
}

impl MemKv {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }
}

/// The same store through async handlers (`rpc-server --handlers async`).
impl kv::KvAsync for MemKv {
    async fn get(&self, ctx: &Context, req: kv::GetRequest) -> Result<kv::GetResponse, Status> {
        kv::Kv::get(self, ctx, req)
    }

    async fn put(&self, ctx: &Context, req: kv::PutRequest) -> Result<kv::PutResponse, Status> {
        kv::Kv::put(self, ctx, req)
    }

    async fn delete(
        &self,
        ctx: &Context,
        req: kv::DeleteRequest,
    ) -> Result<kv::DeleteResponse, Status> {
        kv::Kv::delete(self, ctx, req)
    }

    async fn list(&self, ctx: &Context, req: kv::ListRequest) -> Result<kv::ListResponse, Status> {
        kv::Kv::list(self, ctx, req)
    }
}

impl kv::Kv for MemKv {
    fn get(&self, _: &Context, req: kv::GetRequest) -> Result<kv::GetResponse, Status> {
        match self.map.read().get(&req.key) {
            Some(value) => Ok(kv::GetResponse {
                value: value.clone(),
            }),
            None => Err(Status::not_found(format!("no key {:?}", req.key))),
        }
    }

    fn put(&self, _: &Context, req: kv::PutRequest) -> Result<kv::PutResponse, Status> {
        if req.key.is_empty() {
            return Err(Status::invalid_argument("empty key"));
        }
        let mut map = self.map.write();
        if req.if_absent && map.contains_key(&req.key) {
            return Err(Status::already_exists(format!("key {:?} exists", req.key)));
        }
        // Copy the value out of the request buffer: a stored value must not
        // pin the connection's input nodes for as long as it lives.
        let value = Bytes::copy_from_slice(&req.value);
        let replaced = map.insert(req.key, value).is_some();
        Ok(kv::PutResponse { replaced })
    }

    fn delete(&self, _: &Context, req: kv::DeleteRequest) -> Result<kv::DeleteResponse, Status> {
        match self.map.write().remove(&req.key) {
            Some(value) => Ok(kv::DeleteResponse { value }),
            None => Err(Status::not_found(format!("no key {:?}", req.key))),
        }
    }

    fn list(&self, _: &Context, req: kv::ListRequest) -> Result<kv::ListResponse, Status> {
        let limit = match req.limit as usize {
            0 => MAX_LIST,
            n => n.min(MAX_LIST),
        };
        let map = self.map.read();
        let start = if req.start_after.is_empty() {
            req.prefix.clone()
        } else {
            req.start_after.clone().max(req.prefix.clone())
        };
        let mut entries = Vec::new();
        let mut truncated = false;
        for (key, value) in map.range(start..) {
            if !key.starts_with(&req.prefix) {
                break;
            }
            if *key == req.start_after {
                continue;
            }
            if entries.len() == limit {
                truncated = true;
                break;
            }
            entries.push(kv::Entry {
                key: key.clone(),
                value: value.clone(),
            });
        }
        Ok(kv::ListResponse { entries, truncated })
    }
}

#[cfg(test)]
mod tests {
    use super::kv::Kv as _;
    use super::*;

    #[test]
    fn list_pages_through_a_prefix() {
        let store = MemKv::default();
        let ctx = Context::new("kv.Kv", "List");
        for k in ["a1", "a2", "a3", "b1", "a0"] {
            store
                .put(
                    &ctx,
                    kv::PutRequest {
                        key: k.into(),
                        value: Bytes::from_static(b"v"),
                        if_absent: true,
                    },
                )
                .unwrap();
        }
        let page = |start_after: &str| {
            store
                .list(
                    &ctx,
                    kv::ListRequest {
                        prefix: "a".into(),
                        start_after: start_after.into(),
                        limit: 2,
                    },
                )
                .unwrap()
        };
        let keys =
            |r: &kv::ListResponse| r.entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
        let p1 = page("");
        assert_eq!(
            (keys(&p1), p1.truncated),
            (vec!["a0".to_owned(), "a1".to_owned()], true)
        );
        let p2 = page("a1");
        assert_eq!(
            (keys(&p2), p2.truncated),
            (vec!["a2".to_owned(), "a3".to_owned()], false)
        );
        let p3 = page("a3");
        assert!(p3.entries.is_empty() && !p3.truncated);
    }
}
