//! gRPC interop, tonic's client against a ferropoll server: `echo.Echo`
//! served by `ferropoll_examples::pb::EchoService` (and the delayed async
//! echo for deadlines) on a ferropoll `Server` in this process, called over
//! HTTP/2 cleartext by the client `tonic-prost-build` generated.

use std::time::Duration;

use ferropoll_baselines::echo as tn;
use ferropoll_examples::pb::echo::{EchoAsyncServer, EchoServer};
use ferropoll_examples::pb::{DelayedEcho, EchoService};
use ferropoll_rpc::{Listener, Server};
use futures::StreamExt;

struct Running {
    server: Server,
    url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.server.shutdown(Duration::from_secs(2));
    }
}

fn serve(delay: Option<(&tokio::runtime::Runtime, Duration)>) -> Running {
    let mut builder = Server::builder();
    builder.num_loops(1);
    match delay {
        None => {
            builder.register(EchoServer::new(EchoService)).unwrap();
        }
        Some((rt, delay)) => {
            builder
                .register(EchoAsyncServer::new(DelayedEcho {
                    rt: rt.handle().clone(),
                    delay,
                }))
                .unwrap();
        }
    }
    let server = builder.build().unwrap();
    let addr = server
        .listen(Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap();
    Running {
        server,
        url: format!("http://{addr}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn client(url: &str) -> tn::echo_client::EchoClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tn::echo_client::EchoClient::new(channel)
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20)
}

#[test]
fn tonic_unary_small_empty_and_large() {
    let rt = runtime();
    let srv = serve(None);
    rt.block_on(async {
        let mut c = client(&srv.url).await;
        for payload in [b"hello".to_vec(), Vec::new(), vec![7u8; 3 << 20]] {
            let r = c
                .echo(tn::EchoRequest {
                    payload: payload.clone().into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.payload.len(), payload.len());
            assert!(r.payload == payload);
        }
    });
}

#[test]
fn tonic_many_concurrent_unary_calls_on_one_connection() {
    let rt = runtime();
    let srv = serve(None);
    rt.block_on(async {
        let c = client(&srv.url).await;
        let calls = (0..500).map(|i| {
            let mut c = c.clone();
            async move {
                let payload = format!("call {i}").into_bytes();
                let r = c
                    .echo(tn::EchoRequest {
                        payload: payload.clone().into(),
                    })
                    .await
                    .unwrap();
                assert!(r.into_inner().payload == payload);
            }
        });
        futures::future::join_all(calls).await;
    });
}

#[test]
fn tonic_bidi_stream_bulk_and_ping_pong() {
    let rt = runtime();
    let srv = serve(None);
    rt.block_on(async {
        let mut c = client(&srv.url).await;
        let sent: Vec<Vec<u8>> = (0..2000u32)
            .map(|i| i.to_le_bytes().repeat(64 + (i as usize % 300)))
            .collect();
        let requests = futures::stream::iter(
            sent.clone()
                .into_iter()
                .map(|p| tn::EchoRequest { payload: p.into() }),
        );
        let mut rx = c.echo_stream(requests).await.unwrap().into_inner();
        let mut got = Vec::new();
        while let Some(r) = rx.message().await.unwrap() {
            got.push(r.payload.to_vec());
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "echoes out of order or changed");

        // One message in flight at a time.
        let (mut tx, requests) = futures::channel::mpsc::channel::<tn::EchoRequest>(1);
        let mut rx = c.echo_stream(requests).await.unwrap().into_inner();
        for i in 0..200 {
            let payload = format!("ping {i}").into_bytes();
            futures::SinkExt::send(
                &mut tx,
                tn::EchoRequest {
                    payload: payload.clone().into(),
                },
            )
            .await
            .unwrap();
            let r = rx.next().await.unwrap().unwrap();
            assert!(r.payload == payload);
        }
        drop(tx);
        assert!(
            rx.message().await.unwrap().is_none(),
            "OK after the half-close"
        );
    });
}

#[test]
fn tonic_deadline_on_a_sleeping_server() {
    let rt = runtime();
    let srv = serve(Some((&rt, Duration::from_millis(300))));
    rt.block_on(async {
        let mut c = client(&srv.url).await;
        let mut req = tonic::Request::new(tn::EchoRequest {
            payload: b"slow".to_vec().into(),
        });
        req.set_timeout(Duration::from_millis(50));
        let err = c.echo(req).await.unwrap_err();
        // tonic's channel applies the grpc-timeout it sends itself, and its
        // timer may fire before the server's answer arrives (then CANCELLED,
        // "Timeout expired"); either way the call ends at the deadline.
        assert!(
            err.code() == tonic::Code::DeadlineExceeded
                || (err.code() == tonic::Code::Cancelled && err.message().contains("Timeout")),
            "{err:?}"
        );
        let mut req = tonic::Request::new(tn::EchoRequest {
            payload: b"patient".to_vec().into(),
        });
        req.set_timeout(Duration::from_secs(10));
        assert!(c.echo(req).await.unwrap().into_inner().payload == b"patient"[..]);
    });
}
