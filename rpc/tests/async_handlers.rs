//! Async handlers over real loopback sockets: polled on the connection's
//! loop thread, ready at once or woken back onto the loop; awaiting tokio
//! timers and tokio sockets through a runtime beside the server; async
//! streams with cancellation, deadlines and panics; the in-process client.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferropoll_rpc::{
    CallOptions, Client, ClientOptions, Code, Context, Limits, RecvStream, SendSink, Server,
    ServerEngine, Status,
};
use ferropoll_transport::testing::{LeakCheck, wait_until};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[allow(dead_code)] // generated: not every form is used here
mod streams {
    include!(concat!(env!("OUT_DIR"), "/streams.rs"));
}
use streams::{Num, StreamsAsync, StreamsAsyncServer, StreamsClient};

#[derive(Default)]
struct Seen {
    failures: Mutex<Vec<Status>>,
    done: AtomicUsize,
    /// Threads the handlers were polled on.
    threads: Mutex<Vec<String>>,
    /// `Next` and `Chat` handlers dropped before they finished.
    dropped: AtomicUsize,
}

/// Counts a handler dropped before it finished.
struct DropWatch<'a>(&'a AtomicUsize, bool);

impl Drop for DropWatch<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `Streams` with async handlers. `Next` with a positive `value` waits
/// that many ms on a tokio timer, with `value` −1 it round-trips through a
/// tokio TCP echo server, otherwise it is ready at once. `Count` waits 1 ms
/// between messages when `pad` is `b"slow"`; `value` < 0 streams forever.
struct AsyncImpl {
    seen: Arc<Seen>,
    rt: tokio::runtime::Handle,
    tcp_echo: std::net::SocketAddr,
}

impl AsyncImpl {
    fn note_thread(&self) {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        self.seen.threads.lock().push(name);
    }

    fn failed(&self, s: Status) -> Status {
        self.seen.failures.lock().push(s.clone());
        s
    }
}

impl StreamsAsync for AsyncImpl {
    async fn next(&self, ctx: &Context, req: Num) -> Result<Num, Status> {
        self.note_thread();
        ctx.set_response_metadata("was", req.value.to_string());
        let mut watch = DropWatch(&self.seen.dropped, false);
        if req.value > 0 {
            // A tokio timer needs tokio's context, even to be created: it
            // is made and awaited in a task on the runtime, and the join
            // handle is awaited here.
            let ms = req.value as u64;
            self.rt
                .spawn(async move { tokio::time::sleep(Duration::from_millis(ms)).await })
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            watch.1 = true;
        } else if req.value == -1 {
            let addr = self.tcp_echo;
            let back = self
                .rt
                .spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(addr).await?;
                    s.write_all(b"ping over tokio").await?;
                    let mut buf = [0u8; 15];
                    s.read_exact(&mut buf).await?;
                    Ok::<_, std::io::Error>(buf.to_vec())
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::unavailable(e.to_string()))?;
            watch.1 = true;
            return Ok(Num {
                value: 0,
                pad: Bytes::from(back),
            });
        }
        watch.1 = true;
        self.note_thread();
        Ok(Num {
            value: req.value + 1,
            pad: req.pad,
        })
    }

    async fn count(
        &self,
        _: &Context,
        req: Num,
        mut responses: SendSink<Num>,
    ) -> Result<(), Status> {
        let end = if req.value < 0 { i64::MAX } else { req.value };
        let slow = &req.pad[..] == b"slow";
        let mut result = Ok(());
        for value in 0..end {
            if slow {
                let _ = self
                    .rt
                    .spawn(async { tokio::time::sleep(Duration::from_millis(1)).await })
                    .await;
            }
            if let Err(s) = responses
                .send_async(&Num {
                    value,
                    pad: Bytes::new(),
                })
                .await
            {
                result = Err(self.failed(s));
                break;
            }
        }
        self.seen.done.fetch_add(1, Ordering::SeqCst);
        result
    }

    async fn sum(&self, _: &Context, mut requests: RecvStream<Num>) -> Result<Num, Status> {
        let mut sum = 0;
        while let Some(req) = requests.message().await {
            sum += req.map_err(|s| self.failed(s))?.value;
        }
        Ok(Num {
            value: sum,
            pad: Bytes::new(),
        })
    }

    async fn chat(
        &self,
        _: &Context,
        mut requests: RecvStream<Num>,
        mut responses: SendSink<Num>,
    ) -> Result<(), Status> {
        self.note_thread();
        let mut watch = DropWatch(&self.seen.dropped, false);
        let result = async {
            while let Some(req) = requests.message().await {
                let req = req?;
                if req.value == -1 {
                    panic!("chat was asked to panic");
                }
                responses.send_async(&req).await?;
            }
            Ok(())
        }
        .await;
        watch.1 = true;
        self.seen.done.fetch_add(1, Ordering::SeqCst);
        result.map_err(|s| self.failed(s))
    }
}

struct Fixture {
    server: Option<Server>,
    addr: String,
    seen: Arc<Seen>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Fixture {
    fn start() -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // A tokio TCP echo server for the handler to call.
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let tcp_echo = listener.local_addr().unwrap();
        rt.spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let seen = Arc::new(Seen::default());
        let mut builder = Server::builder();
        builder.num_loops(1).limits(Limits::default());
        builder
            .register(StreamsAsyncServer::new(AsyncImpl {
                seen: Arc::clone(&seen),
                rt: rt.handle().clone(),
                tcp_echo,
            }))
            .unwrap();
        let server = builder.build().unwrap();
        let addr = server
            .listen(ferropoll_rpc::Listener::bind_tcp("127.0.0.1:0").unwrap())
            .unwrap()
            .to_string();
        Fixture {
            server: Some(server),
            addr,
            seen,
            rt: Some(rt),
        }
    }

    fn client(&self) -> StreamsClient {
        StreamsClient::new(Client::connect(&self.addr, ClientOptions::default()).unwrap())
    }

    fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(5)).unwrap();
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn num(value: i64) -> Num {
    Num {
        value,
        pad: Bytes::new(),
    }
}

#[test]
fn async_unary_handlers_run_on_the_loop_and_await_tokio() {
    // The runtime's global descriptors (its signal pipe) count as baseline.
    let f = Fixture::start();
    let leaks = LeakCheck::new();
    let client = f.client();
    // Ready at its first poll, with the OK response's metadata.
    assert_eq!(client.next(&num(1)).unwrap().value, 2);
    let (n, md) = client
        .next_with_metadata(&num(2), &CallOptions::new())
        .unwrap();
    assert_eq!((n.value, md.get("was")), (3, Some("2")));
    // and after a wait on the loop
    let (n, md) = client
        .next_with_metadata(&num(10), &CallOptions::new())
        .unwrap();
    assert_eq!((n.value, md.get("was")), (11, Some("10")));
    // A tokio timer of 30 ms: woken back onto the loop.
    let started = Instant::now();
    assert_eq!(client.next(&num(30)).unwrap().value, 31);
    assert!(started.elapsed() >= Duration::from_millis(30));
    // A tokio TCP connection.
    let back = client.next(&num(-1)).unwrap();
    assert_eq!(&back.pad[..], b"ping over tokio");
    // Many waiting at once on one connection, all answered.
    let calls: Vec<_> = (0..100)
        .map(|i| client.next_async(&num(5 + i % 7)))
        .collect();
    let got: Vec<i64> = futures::executor::block_on(futures::future::join_all(calls))
        .into_iter()
        .map(|r| r.unwrap().value)
        .collect();
    assert_eq!(got, (0..100).map(|i| 6 + i % 7).collect::<Vec<_>>());
    // Every poll ran on the server's loop thread.
    let threads = f.seen.threads.lock().clone();
    assert!(!threads.is_empty());
    assert!(
        threads.iter().all(|t| t.starts_with("ferropoll-rpc")),
        "{threads:?}"
    );
    drop(client);
    f.stop();
    leaks.assert_clean();
}

#[test]
fn async_streams_of_each_kind() {
    let f = Fixture::start();
    let leaks = LeakCheck::new();
    let client = f.client();
    let got: Vec<i64> = client
        .count(&num(100))
        .unwrap()
        .map(|r| r.unwrap().value)
        .collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    let slow: Vec<i64> = client
        .count(&Num {
            value: 5,
            pad: Bytes::from_static(b"slow"),
        })
        .unwrap()
        .map(|r| r.unwrap().value)
        .collect();
    assert_eq!(slow, [0, 1, 2, 3, 4]);

    let (mut tx, rx) = client.sum().unwrap();
    for v in 1..=1000 {
        tx.send(&num(v)).unwrap();
    }
    drop(tx);
    assert_eq!(rx.single().unwrap().value, 500_500);

    // bidi, 5,000 messages of 1 KiB each way, with a writer thread
    let (mut tx, mut rx) = client.chat().unwrap();
    let writer = std::thread::spawn(move || {
        for v in 0..5000 {
            tx.send(&Num {
                value: v,
                pad: Bytes::from(vec![1; 1024]),
            })
            .unwrap();
        }
    });
    let mut expect = 0;
    while let Some(n) = rx.recv() {
        assert_eq!(n.unwrap().value, expect);
        expect += 1;
    }
    writer.join().unwrap();
    assert_eq!(expect, 5000);
    drop((rx, client));
    f.stop();
    leaks.assert_clean();
}

#[test]
fn async_stream_cancel_deadline_and_panic() {
    let f = Fixture::start();
    let leaks = LeakCheck::new();
    let client = f.client();

    // The client drops an endless stream: the handler's send fails.
    let mut endless = client
        .count(&Num {
            value: -1,
            pad: Bytes::from_static(b"slow"),
        })
        .unwrap();
    assert_eq!(endless.recv().unwrap().unwrap().value, 0);
    drop(endless);
    assert!(
        wait_until(Duration::from_secs(5), || f
            .seen
            .done
            .load(Ordering::SeqCst)
            == 1),
        "the async handler did not stop"
    );
    assert_eq!(f.seen.failures.lock()[0].code(), Code::Cancelled);

    // A deadline while the handler waits for a message.
    let opts = CallOptions::new().with_timeout(Duration::from_millis(200));
    let (mut tx, mut rx) = client.chat_with(&opts).unwrap();
    tx.send(&num(4)).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap().value, 4);
    assert_eq!(
        rx.recv().unwrap().unwrap_err().code(),
        Code::DeadlineExceeded
    );
    assert!(
        wait_until(Duration::from_secs(5), || f
            .seen
            .done
            .load(Ordering::SeqCst)
            == 2),
        "the async handler did not see its deadline"
    );
    let code = f.seen.failures.lock()[1].code();
    assert!(
        matches!(code, Code::DeadlineExceeded | Code::Cancelled),
        "{code:?}"
    );
    drop((tx, rx));

    // A panic ends that stream with INTERNAL; the connection carries on.
    let (mut tx, mut rx) = client.chat().unwrap();
    tx.send(&num(-1)).unwrap();
    let status = rx.recv().unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(client.next(&num(1)).unwrap().value, 2);
    drop((tx, rx, client));
    f.stop();
    leaks.assert_clean();
}

#[test]
fn a_closed_connection_drops_its_waiting_handlers() {
    let f = Fixture::start();
    let leaks = LeakCheck::new();
    let client = f.client();
    // A call whose handler waits a minute on a tokio timer, and an open
    // stream whose handler waits for a message.
    let waiting = client.next_async(&num(60_000));
    let (tx, rx) = client.chat().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || f.seen.threads.lock().len() >= 2),
        "the handlers did not start"
    );
    // The client goes away without cancelling: its connection closes. The
    // server drops both handlers' futures (the async way to cancel them:
    // they stop at the await they were at).
    drop(client);
    assert!(
        wait_until(Duration::from_secs(5), || f
            .seen
            .dropped
            .load(Ordering::SeqCst)
            == 2),
        "the waiting handlers were not dropped: {}",
        f.seen.dropped.load(Ordering::SeqCst)
    );
    assert_eq!(f.seen.done.load(Ordering::SeqCst), 0);
    drop((waiting, tx, rx));
    f.stop();
    leaks.assert_clean();
}

#[test]
fn async_handlers_in_process() {
    let f = Fixture::start();
    let leaks = LeakCheck::new();
    let mut engine = ServerEngine::new();
    engine
        .register(StreamsAsyncServer::new(AsyncImpl {
            seen: Arc::clone(&f.seen),
            rt: f.rt.as_ref().unwrap().handle().clone(),
            tcp_echo: "127.0.0.1:9".parse().unwrap(),
        }))
        .unwrap();
    let client = StreamsClient::new(Client::in_process(
        Arc::new(engine),
        ClientOptions::default(),
    ));
    assert_eq!(client.next(&num(1)).unwrap().value, 2);
    assert_eq!(client.next(&num(20)).unwrap().value, 21);
    drop(client);
    f.stop();
    leaks.assert_clean();
}

#[test]
fn dropping_a_unary_future_cancels_its_waiting_handler() {
    let f = Fixture::start();
    let leaks = LeakCheck::new();
    let client = f.client();
    // The handler waits a minute on a tokio timer.
    let waiting = client.next_async(&num(60_000));
    assert!(
        wait_until(Duration::from_secs(5), || !f.seen.threads.lock().is_empty()),
        "the handler did not start"
    );
    assert_eq!(f.seen.dropped.load(Ordering::SeqCst), 0);
    // The caller gives up: the client sends CANCEL, the server drops the
    // handler's future (it stops at its await) while the connection lives.
    drop(waiting);
    assert!(
        wait_until(Duration::from_secs(5), || f
            .seen
            .dropped
            .load(Ordering::SeqCst)
            == 1),
        "the cancelled handler was not dropped"
    );
    assert_eq!(f.seen.done.load(Ordering::SeqCst), 0);
    // The connection carries on.
    assert_eq!(client.next(&num(0)).unwrap().value, 1);
    assert_eq!(client.client().open_connections(), 1);
    drop(client);
    f.stop();
    leaks.assert_clean();
}
