//! Interceptors over real loopback sockets: order, rejection and metadata
//! on the server and the client; one end per call on every dispatch path
//! (inline, pool, async, streams); W3C trace context through a nested
//! call; the concurrency limit; the metrics' counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferropoll_rpc::intercept::{
    CallEnd, CallStart, ConcurrencyLimit, Interceptor, TraceParent, TracingInterceptor,
};
use ferropoll_rpc::{
    CallOptions, Client, ClientOptions, Code, Context, Dispatch, MetricsInterceptor, RecvStream,
    SendSink, Server, ServerBuilder, Status,
};
use ferropoll_transport::testing::{LeakCheck, wait_until};
use parking_lot::{Condvar, Mutex};

#[allow(dead_code)] // generated: not every form is used here
mod streams {
    include!(concat!(env!("OUT_DIR"), "/streams.rs"));
}
use streams::{Num, Streams, StreamsAsync, StreamsAsyncServer, StreamsClient, StreamsServer};

const WAIT: Duration = Duration::from_secs(10);

/// Records its starts and ends; rejects calls whose `deny` entry names it;
/// marks the request (`via-<name>`) and the response (`from-<name>`).
struct Record {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl Interceptor for Record {
    fn start(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
        self.log
            .lock()
            .push(format!("{} start {}", self.name, call.method()));
        if call.metadata().get("deny") == Some(self.name) {
            return Err(Status::unauthenticated(format!("{} says no", self.name)));
        }
        call.metadata_mut()
            .insert(format!("via-{}", self.name), "1");
        call.add_response_metadata(format!("from-{}", self.name), "1");
        Ok(())
    }

    fn end(&self, call: &CallEnd<'_>) {
        self.log
            .lock()
            .push(format!("{} end {:?}", self.name, call.code()));
    }
}

/// Counts starts and ends by method and code.
#[derive(Default)]
struct Count {
    starts: AtomicUsize,
    ends: Mutex<HashMap<(String, Code), usize>>,
}

impl Interceptor for Count {
    fn start(&self, _: &mut CallStart<'_>) -> Result<(), Status> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn end(&self, call: &CallEnd<'_>) {
        *self
            .ends
            .lock()
            .entry((call.method().to_owned(), call.code()))
            .or_default() += 1;
    }
}

impl Count {
    fn ended(&self) -> usize {
        self.ends.lock().values().sum()
    }

    fn of(&self, method: &str, code: Code) -> usize {
        self.ends
            .lock()
            .get(&(method.to_owned(), code))
            .copied()
            .unwrap_or(0)
    }
}

/// A gate that `Next(-5)` waits at.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock();
        let until = Instant::now() + WAIT;
        while !*open && Instant::now() < until {
            self.cv.wait_until(&mut open, until);
        }
    }

    fn release(&self) {
        *self.open.lock() = true;
        self.cv.notify_all();
    }
}

/// What a `Next` handler saw, answered in its response metadata: the
/// request's `via-*` entries, its `traceparent`, the current trace and
/// the current span's name.
fn note(ctx: &Context) {
    let via: Vec<&str> = ctx
        .metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("via-"))
        .map(|(k, _)| k)
        .collect();
    ctx.set_response_metadata("via", via.join(","));
    ctx.set_response_metadata("got-tp", ctx.metadata().get("traceparent").unwrap_or(""));
    ctx.set_response_metadata(
        "current",
        TraceParent::current()
            .map(|t| t.to_string())
            .unwrap_or_default(),
    );
    let span = tracing::Span::current();
    ctx.set_response_metadata("span", span.metadata().map_or("", |m| m.name()));
}

/// `Streams`, synchronous. `Next`: −7 answers NOT_FOUND, −5 waits at the
/// gate, −9 calls `downstream` (and answers what it saw as `down-*`).
#[derive(Default)]
struct Sync {
    gate: Gate,
    calls: AtomicUsize,
    downstream: Mutex<Option<StreamsClient>>,
}

impl Streams for Arc<Sync> {
    fn next(&self, ctx: &Context, req: Num) -> Result<Num, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        note(ctx);
        match req.value {
            -7 => return Err(Status::not_found("no such number")),
            -5 => self.gate.wait(),
            -9 => {
                let down = self.downstream.lock().clone().expect("a downstream client");
                let (_, md) = down.next_with_metadata(&num(1), &CallOptions::new())?;
                for key in ["got-tp", "current"] {
                    ctx.set_response_metadata(format!("down-{key}"), md.get(key).unwrap_or(""));
                }
            }
            _ => {}
        }
        Ok(num(req.value + 1))
    }

    fn count(&self, _: &Context, req: Num, mut responses: SendSink<Num>) -> Result<(), Status> {
        for i in 0..req.value {
            responses.send(&num(i))?;
        }
        Ok(())
    }

    fn sum(&self, _: &Context, requests: RecvStream<Num>) -> Result<Num, Status> {
        let mut total = 0;
        for r in requests {
            total += r?.value;
        }
        Ok(num(total))
    }

    fn chat(
        &self,
        _: &Context,
        requests: RecvStream<Num>,
        mut responses: SendSink<Num>,
    ) -> Result<(), Status> {
        for r in requests {
            responses.send(&r?)?;
        }
        Ok(())
    }
}

/// `Streams`, async: `Next` waits on a tokio timer first, then notes what
/// it sees (the scope must be entered again at that later poll).
struct Async {
    rt: tokio::runtime::Handle,
}

impl StreamsAsync for Async {
    async fn next(&self, ctx: &Context, req: Num) -> Result<Num, Status> {
        self.rt
            .spawn(async { tokio::time::sleep(Duration::from_millis(2)).await })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        note(ctx);
        if req.value == -7 {
            return Err(Status::not_found("no such number"));
        }
        Ok(num(req.value + 1))
    }

    async fn count(
        &self,
        _: &Context,
        req: Num,
        mut responses: SendSink<Num>,
    ) -> Result<(), Status> {
        for i in 0..req.value {
            responses.send_async(&num(i)).await?;
        }
        Ok(())
    }

    async fn sum(&self, _: &Context, mut requests: RecvStream<Num>) -> Result<Num, Status> {
        let mut total = 0;
        while let Some(r) = requests.message().await {
            total += r?.value;
        }
        Ok(num(total))
    }

    async fn chat(
        &self,
        _: &Context,
        mut requests: RecvStream<Num>,
        mut responses: SendSink<Num>,
    ) -> Result<(), Status> {
        while let Some(r) = requests.message().await {
            responses.send_async(&r?).await?;
        }
        Ok(())
    }
}

/// A timer-only runtime: no descriptors of its own, so it may start after
/// the leak check's baseline.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap()
}

fn num(value: i64) -> Num {
    Num {
        value,
        pad: Bytes::new(),
    }
}

fn serve(mut builder: ServerBuilder) -> (Server, String) {
    let server = builder.build().unwrap();
    let addr = server
        .listen(ferropoll_rpc::Listener::bind_tcp("127.0.0.1:0").unwrap())
        .unwrap()
        .to_string();
    (server, addr)
}

fn sync_server(service: &Arc<Sync>, next: Dispatch) -> ServerBuilder {
    let mut builder = Server::builder();
    builder.num_loops(1);
    builder
        .register(StreamsServer::new(Arc::clone(service)))
        .unwrap()
        .method_dispatch("Next", next)
        .unwrap();
    builder
}

fn connect(addr: &str, options: ClientOptions) -> StreamsClient {
    StreamsClient::new(Client::connect(addr, options).unwrap())
}

/// Spans are recorded (so that `Span::current` names them) by a
/// subscriber that writes nowhere.
fn subscriber() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::sink)
            .init();
    });
}

#[test]
fn the_server_chain_runs_in_order_rejects_and_adds_metadata() {
    let leaks = LeakCheck::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let service = Arc::new(Sync::default());
    let mut builder = sync_server(&service, Dispatch::Inline);
    for name in ["A", "B"] {
        builder.intercept(Record {
            name,
            log: Arc::clone(&log),
        });
    }
    let (server, addr) = serve(builder);
    let client = connect(&addr, ClientOptions::default());

    let (resp, md) = client
        .next_with_metadata(&num(1), &CallOptions::new())
        .unwrap();
    assert_eq!(resp.value, 2);
    assert_eq!(
        md.get("via"),
        Some("via-A,via-B"),
        "the handler sees what they added"
    );
    assert_eq!((md.get("from-A"), md.get("from-B")), (Some("1"), Some("1")));
    assert_eq!(
        std::mem::take(&mut *log.lock()),
        ["A start Next", "B start Next", "B end Ok", "A end Ok"]
    );

    // B rejects: the handler does not run, A ends with B's status.
    let before = service.calls.load(Ordering::SeqCst);
    let err = client
        .next_with(&num(1), &CallOptions::new().with_metadata("deny", "B"))
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "B says no")
    );
    assert_eq!(service.calls.load(Ordering::SeqCst), before);
    assert_eq!(
        std::mem::take(&mut *log.lock()),
        ["A start Next", "B start Next", "A end Unauthenticated"]
    );

    // A streaming call: ends after its final status.
    let sum: i64 = client
        .count(&num(4))
        .unwrap()
        .map(|r| r.unwrap().value)
        .sum();
    assert_eq!(sum, 6);
    assert!(
        wait_until(WAIT, || log.lock().len() == 4),
        "{:?}",
        log.lock()
    );
    assert_eq!(
        std::mem::take(&mut *log.lock()),
        ["A start Count", "B start Count", "B end Ok", "A end Ok"]
    );
    drop(client);
    drop(server);
    leaks.assert_clean();
}

#[test]
fn every_dispatch_path_ends_each_call_once() {
    let leaks = LeakCheck::new();
    let rt = runtime();
    for path in ["inline", "pool", "async"] {
        let count = Arc::new(Count::default());
        let mut builder = match path {
            "inline" => sync_server(&Arc::new(Sync::default()), Dispatch::Inline),
            "pool" => sync_server(&Arc::new(Sync::default()), Dispatch::Pool),
            _ => {
                let mut b = Server::builder();
                b.num_loops(1);
                b.register(StreamsAsyncServer::new(Async {
                    rt: rt.handle().clone(),
                }))
                .unwrap();
                b
            }
        };
        builder.intercept_arc(count.clone());
        let (server, addr) = serve(builder);
        let client = connect(&addr, ClientOptions::default());

        assert_eq!(client.next(&num(1)).unwrap().value, 2, "{path}");
        assert_eq!(client.next(&num(-7)).unwrap_err().code(), Code::NotFound);
        assert_eq!(client.count(&num(3)).unwrap().count(), 3);
        let (mut sink, responses) = client.sum().unwrap();
        sink.send(&num(5)).unwrap();
        sink.close();
        assert_eq!(responses.single().unwrap().value, 5);
        let (mut sink, mut responses) = client.chat().unwrap();
        sink.send(&num(9)).unwrap();
        assert_eq!(responses.recv().unwrap().unwrap().value, 9);
        drop(sink);
        assert!(responses.recv().is_none());
        // Cancelled mid-stream by the caller.
        let (mut sink, mut responses) = client.chat().unwrap();
        sink.send(&num(1)).unwrap();
        assert!(responses.recv().unwrap().is_ok());
        drop(responses);

        assert!(
            wait_until(WAIT, || count.ended() == 6),
            "{path}: {:?}",
            count.ends.lock()
        );
        assert_eq!(count.starts.load(Ordering::SeqCst), 6, "{path}");
        assert_eq!(count.of("Next", Code::Ok), 1, "{path}");
        assert_eq!(count.of("Next", Code::NotFound), 1, "{path}");
        assert_eq!(count.of("Count", Code::Ok), 1, "{path}");
        assert_eq!(count.of("Sum", Code::Ok), 1, "{path}");
        assert_eq!(count.of("Chat", Code::Ok), 1, "{path}");
        assert_eq!(
            count.of("Chat", Code::Cancelled),
            1,
            "{path}: {:?}",
            count.ends.lock()
        );
        drop(client);
        drop(server);
    }
    drop(rt);
    leaks.assert_clean();
}

#[test]
fn client_interceptors_add_metadata_reject_locally_and_see_each_end() {
    let leaks = LeakCheck::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let service = Arc::new(Sync::default());
    let (server, addr) = serve(sync_server(&service, Dispatch::Inline));
    let mut options = ClientOptions::default();
    options.interceptors.push(Record {
        name: "C",
        log: Arc::clone(&log),
    });
    let client = connect(&addr, options);

    let (_, md) = client
        .next_with_metadata(&num(1), &CallOptions::new())
        .unwrap();
    assert_eq!(md.get("via"), Some("via-C"), "sent with the request");
    assert_eq!(
        std::mem::take(&mut *log.lock()),
        ["C start Next", "C end Ok"]
    );

    let before = service.calls.load(Ordering::SeqCst);
    let err = client
        .next_with(&num(1), &CallOptions::new().with_metadata("deny", "C"))
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        service.calls.load(Ordering::SeqCst),
        before,
        "nothing was sent"
    );
    assert_eq!(std::mem::take(&mut *log.lock()), ["C start Next"]);

    // Async: ends when the future resolves; a dropped future is CANCELLED.
    let r = futures::executor::block_on(client.next_async(&num(-7)));
    assert_eq!(r.unwrap_err().code(), Code::NotFound);
    drop(client.next_async(&num(1)));
    assert_eq!(
        std::mem::take(&mut *log.lock()),
        [
            "C start Next",
            "C end NotFound",
            "C start Next",
            "C end Cancelled"
        ]
    );

    // Streams end with their last message.
    assert_eq!(client.count(&num(2)).unwrap().count(), 2);
    assert_eq!(
        std::mem::take(&mut *log.lock()),
        ["C start Count", "C end Ok"]
    );
    drop(client);
    drop(server);
    leaks.assert_clean();
}

#[test]
fn tracing_propagates_traceparent_through_a_nested_call() {
    subscriber();
    let leaks = LeakCheck::new();
    let rt = runtime();
    let traced = || {
        let mut options = ClientOptions::default();
        options.interceptors.push(TracingInterceptor::new());
        options
    };
    // B, the downstream, with async handlers; A calls it from its handler.
    let mut b = Server::builder();
    b.num_loops(1);
    b.register(StreamsAsyncServer::new(Async {
        rt: rt.handle().clone(),
    }))
    .unwrap();
    b.intercept(TracingInterceptor::new());
    let (server_b, addr_b) = serve(b);
    let service_a = Arc::new(Sync::default());
    *service_a.downstream.lock() = Some(connect(&addr_b, traced()));
    let mut a = sync_server(&service_a, Dispatch::Pool);
    a.intercept(TracingInterceptor::new());
    let (server_a, addr_a) = serve(a);
    let client = connect(&addr_a, traced());

    let root: TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        .parse()
        .unwrap();
    let (_, md) = client
        .next_with_metadata(
            &num(-9),
            &CallOptions::new().with_metadata("traceparent", root.to_string()),
        )
        .unwrap();
    let get = |key: &str| -> TraceParent {
        md.get(key)
            .unwrap_or_else(|| panic!("no {key} in {md:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("{key}: {e}: {md:?}"))
    };
    // A received the caller's traceparent and runs in a child span of it.
    assert_eq!(get("got-tp"), root);
    let a_span = get("current");
    assert_eq!(a_span.trace_id(), root.trace_id());
    assert_ne!(a_span.span_id(), root.span_id());
    assert_eq!(md.get("span"), Some("rpc.server"));
    // A's call to B: same trace, a new span id; B runs in its own child,
    // current again after its handler's await.
    let b_got = get("down-got-tp");
    let b_span = get("down-current");
    assert_eq!(
        (b_got.trace_id(), b_span.trace_id()),
        (root.trace_id(), root.trace_id())
    );
    let ids = [
        root.span_id(),
        a_span.span_id(),
        b_got.span_id(),
        b_span.span_id(),
    ];
    for (i, x) in ids.iter().enumerate() {
        assert!(!ids[..i].contains(x), "span ids must differ: {ids:x?}");
    }

    // Without a traceparent the client starts a trace; the server continues it.
    let (_, md) = client
        .next_with_metadata(&num(1), &CallOptions::new())
        .unwrap();
    let sent: TraceParent = md.get("got-tp").unwrap().parse().unwrap();
    let current: TraceParent = md.get("current").unwrap().parse().unwrap();
    assert_eq!(sent.trace_id(), current.trace_id());
    drop(client);
    drop(server_a);
    drop(service_a);
    drop(server_b);
    drop(rt);
    leaks.assert_clean();
}

#[test]
fn the_concurrency_limit_sheds_calls_beyond_it() {
    let leaks = LeakCheck::new();
    let service = Arc::new(Sync::default());
    let limit = Arc::new(ConcurrencyLimit::new().method("streams.Streams", "Next", 2));
    let mut builder = sync_server(&service, Dispatch::Pool);
    builder.intercept_arc(limit.clone());
    let (server, addr) = serve(builder);
    let client = connect(&addr, ClientOptions::default());

    let waiting: Vec<_> = (0..2).map(|_| client.next_async(&num(-5))).collect();
    assert!(wait_until(WAIT, || limit
        .in_flight("streams.Streams", "Next")
        == 2));
    let err = client.next(&num(1)).unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("limit 2"), "{err}");
    // Other methods are not limited.
    assert_eq!(client.count(&num(2)).unwrap().count(), 2);
    service.gate.release();
    for call in waiting {
        assert_eq!(call.wait().unwrap().value, -4);
    }
    assert_eq!(client.next(&num(1)).unwrap().value, 2);
    assert_eq!(limit.in_flight("streams.Streams", "Next"), 0);
    drop(client);
    drop(server);
    leaks.assert_clean();
}

/// The value of the sample `name{labels}` in `text`.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.parse().unwrap())
}

#[test]
fn metrics_count_calls_by_method_and_status() {
    let leaks = LeakCheck::new();
    let server_metrics = Arc::new(MetricsInterceptor::new());
    let client_metrics = Arc::new(MetricsInterceptor::new());
    let service = Arc::new(Sync::default());
    let mut builder = sync_server(&service, Dispatch::Inline);
    builder.intercept_arc(server_metrics.clone());
    let (server, addr) = serve(builder);
    let mut options = ClientOptions::default();
    options.interceptors.push_arc(client_metrics.clone());
    let client = connect(&addr, options);

    for _ in 0..3 {
        client.next(&num(1)).unwrap();
    }
    for _ in 0..2 {
        client.next(&num(-7)).unwrap_err();
    }
    assert_eq!(client.count(&num(3)).unwrap().count(), 3);
    let next = |side| format!(r#"side="{side}",service="streams.Streams",method="Next""#);
    assert!(wait_until(WAIT, || {
        sample(
            &server_metrics.encode(),
            "ferropoll_rpc_in_flight",
            &next("server"),
        ) == Some(0.0)
            && sample(
                &server_metrics.encode(),
                "ferropoll_rpc_calls_total",
                r#"side="server",service="streams.Streams",method="Count",code="OK""#,
            ) == Some(1.0)
    }));
    for (metrics, side) in [(&server_metrics, "server"), (&client_metrics, "client")] {
        let text = metrics.encode();
        let calls = |code: &str| {
            sample(
                &text,
                "ferropoll_rpc_calls_total",
                &format!("{},code=\"{code}\"", next(side)),
            )
        };
        assert_eq!(calls("OK"), Some(3.0), "{text}");
        assert_eq!(calls("NOT_FOUND"), Some(2.0), "{text}");
        assert_eq!(
            sample(&text, "ferropoll_rpc_duration_seconds_count", &next(side)),
            Some(5.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "ferropoll_rpc_in_flight", &next(side)),
            Some(0.0)
        );
    }
    drop(client);
    drop(server);
    leaks.assert_clean();
}

/// `(side start|end method, method id)` entries.
type IdLog = Arc<Mutex<Vec<(String, Option<usize>)>>>;

/// Records `side method id` at each start and end, and `side kind method`
/// at each start.
struct Ids(IdLog);

impl Interceptor for Ids {
    fn start(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
        let kind = format!("{:?} {:?} {}", call.side(), call.kind(), call.method());
        self.0.lock().push((kind, None));
        let what = format!("{:?} start {}", call.side(), call.method());
        self.0.lock().push((what, call.method_id()));
        Ok(())
    }

    fn end(&self, call: &CallEnd<'_>) {
        let what = format!("{:?} end {}", call.side(), call.method());
        self.0.lock().push((what, call.method_id()));
    }
}

#[test]
fn method_ids_name_each_registered_method_on_the_server_only() {
    let leaks = LeakCheck::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let service = Arc::new(Sync::default());
    let mut builder = sync_server(&service, Dispatch::Inline);
    builder.intercept(Ids(Arc::clone(&log)));
    let (server, addr) = serve(builder);
    let mut options = ClientOptions::default();
    options.interceptors.push(Ids(Arc::clone(&log)));
    let client = connect(&addr, options);

    for _ in 0..2 {
        client.next(&num(1)).unwrap();
    }
    let sum: i64 = client
        .count(&num(3))
        .unwrap()
        .map(|r| r.unwrap().value)
        .sum();
    assert_eq!(sum, 3);
    // Each kind as the interceptors see it, on both sides.
    let (mut sink, responses) = client.sum().unwrap();
    sink.send(&num(5)).unwrap();
    drop(sink);
    assert_eq!(responses.single().unwrap().value, 5);
    let (mut sink, mut responses) = client.chat().unwrap();
    sink.send(&num(7)).unwrap();
    assert!(responses.recv().is_some());
    drop(sink);
    drop(responses);
    // 5 calls × (client kind/start/end + server kind/start/end).
    assert!(
        wait_until(WAIT, || log.lock().len() == 30),
        "{:?}",
        log.lock()
    );
    let log = std::mem::take(&mut *log.lock());
    let ids_of = |what: &str| -> Vec<Option<usize>> {
        log.iter()
            .filter(|(w, _)| w == what)
            .map(|(_, id)| *id)
            .collect()
    };
    assert_eq!(ids_of("Client start Next"), [None, None], "{log:?}");
    assert_eq!(ids_of("Client end Count"), [None], "{log:?}");
    let next = ids_of("Server start Next");
    assert_eq!(next.len(), 2, "{log:?}");
    assert!(
        next[0].is_some() && next[0] == next[1],
        "one id per method: {log:?}"
    );
    assert_eq!(
        ids_of("Server end Next"),
        next,
        "the end sees the start's id"
    );
    let count = ids_of("Server start Count");
    assert!(
        count[0].is_some() && count[0] != next[0],
        "methods differ: {log:?}"
    );
    assert_eq!(ids_of("Server end Count"), count);
    for side in ["Client", "Server"] {
        for (kind, method) in [
            ("Unary", "Next"),
            ("ServerStreaming", "Count"),
            ("ClientStreaming", "Sum"),
            ("Bidi", "Chat"),
        ] {
            let what = format!("{side} {kind} {method}");
            assert!(log.iter().any(|(w, _)| *w == what), "{what}: {log:?}");
        }
    }
    drop(client);
    drop(server);
    leaks.assert_clean();
}
