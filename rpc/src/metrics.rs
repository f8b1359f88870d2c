//! Prometheus metrics of calls, through `prometheus-client` (feature
//! `metrics`).

use std::fmt;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::hash::{IdTable, StrMap};
use crate::intercept::{CallEnd, CallStart, Interceptor, Side};
use crate::status::{Code, Status};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    side: String,
    service: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    side: String,
    service: String,
    method: String,
    code: String,
}

/// Per service, then per method.
type MethodMap = StrMap<StrMap<Arc<MethodMetrics>>>;

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// The handles of one method's metrics, looked up once.
struct MethodMetrics {
    labels: MethodLabels,
    calls: [OnceLock<Counter>; 17],
    in_flight: Gauge,
    duration: Histogram,
}

/// Call metrics in the Prometheus text format: an [`Interceptor`] counting
/// calls per method by status code, the calls in flight, and a latency
/// histogram — on the server, the client, or both (label `side`).
///
/// | metric | type | labels |
/// |---|---|---|
/// | `ferropoll_rpc_calls_total` | counter | `side`, `service`, `method`, `code` |
/// | `ferropoll_rpc_in_flight` | gauge | `side`, `service`, `method` |
/// | `ferropoll_rpc_duration_seconds` | histogram (50 µs to 1.6 s, doubling) | `side`, `service`, `method` |
///
/// `code` is the status name (`OK`, `NOT_FOUND`, ...). Calls rejected by an
/// interceptor installed before this one are not seen; install it first to
/// count every call. Serve [`encode`](MetricsInterceptor::encode) at
/// `/metrics` (`rpc-server --metrics-addr` does), or register the metrics
/// in a registry of your own with [`register`](MetricsInterceptor::register).
///
/// ```
/// use std::sync::Arc;
/// use ferropoll_rpc::MetricsInterceptor;
///
/// let metrics = Arc::new(MetricsInterceptor::new());
/// let mut builder = ferropoll_rpc::Server::builder();
/// builder.intercept_arc(metrics.clone());
/// // ... build, serve, then at /metrics:
/// let text = metrics.encode();
/// assert!(text.ends_with("# EOF\n")); // OpenMetrics text, no calls yet
/// ```
pub struct MetricsInterceptor {
    calls: Family<CodeLabels, Counter>,
    in_flight: Family<MethodLabels, Gauge>,
    duration: HistogramFamily,
    registry: Registry,
    /// Per side, service and method.
    methods: RwLock<[MethodMap; 2]>,
    /// The server side's metrics by method id: no name lookup per call.
    by_id: IdTable<Arc<MethodMetrics>>,
}

impl fmt::Debug for MetricsInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsInterceptor").finish_non_exhaustive()
    }
}

impl Default for MetricsInterceptor {
    fn default() -> Self {
        MetricsInterceptor::new()
    }
}

fn new_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl MetricsInterceptor {
    /// Metrics of no calls yet, in a registry of their own.
    pub fn new() -> MetricsInterceptor {
        let calls = Family::<CodeLabels, Counter>::default();
        let in_flight = Family::<MethodLabels, Gauge>::default();
        let duration: HistogramFamily = Family::new_with_constructor(new_histogram);
        let mut registry = Registry::default();
        register_into(&mut registry, &calls, &in_flight, &duration);
        MetricsInterceptor {
            calls,
            in_flight,
            duration,
            registry,
            methods: RwLock::new([StrMap::default(), StrMap::default()]),
            by_id: IdTable::default(),
        }
    }

    /// Registers the metrics in `registry` too (they keep counting in
    /// their own).
    pub fn register(&self, registry: &mut Registry) {
        register_into(registry, &self.calls, &self.in_flight, &self.duration);
    }

    /// The metrics in the Prometheus/OpenMetrics text format (content type
    /// `application/openmetrics-text; version=1.0.0; charset=utf-8`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Runs `f` on the metrics of `service`/`method` (registered as
    /// `method_id` on a server), created at first use.
    fn with_method<R>(
        &self,
        side: Side,
        service: &str,
        method: &str,
        method_id: Option<usize>,
        f: impl FnOnce(&MethodMetrics) -> R,
    ) -> R {
        let mut f = Some(f);
        if let Some(id) = method_id
            && let Some(r) = self.by_id.with(id, |m| (f.take().expect("called once"))(m))
        {
            return r;
        }
        let f = f.expect("not called yet");
        let i = side as usize;
        let found = self.methods.read()[i]
            .get(service)
            .and_then(|s| s.get(method))
            .cloned();
        let m = found.unwrap_or_else(|| self.create(side, service, method));
        if let Some(id) = method_id {
            self.by_id.insert(id, Arc::clone(&m));
        }
        f(&m)
    }

    /// The metrics of `service`/`method`, created if they are new.
    fn create(&self, side: Side, service: &str, method: &str) -> Arc<MethodMetrics> {
        let i = side as usize;
        let mut methods = self.methods.write();
        let m = methods[i]
            .entry(service.to_owned())
            .or_default()
            .entry(method.to_owned())
            .or_insert_with(|| {
                let labels = MethodLabels {
                    side: side.as_str().to_owned(),
                    service: service.to_owned(),
                    method: method.to_owned(),
                };
                Arc::new(MethodMetrics {
                    calls: Default::default(),
                    in_flight: self.in_flight.get_or_create_owned(&labels),
                    duration: self.duration.get_or_create_owned(&labels),
                    labels,
                })
            });
        Arc::clone(m)
    }
}

fn register_into(
    registry: &mut Registry,
    calls: &Family<CodeLabels, Counter>,
    in_flight: &Family<MethodLabels, Gauge>,
    duration: &HistogramFamily,
) {
    registry.register(
        "ferropoll_rpc_calls",
        "Calls ended, by method and status code",
        calls.clone(),
    );
    registry.register(
        "ferropoll_rpc_in_flight",
        "Calls started and not ended",
        in_flight.clone(),
    );
    registry.register(
        "ferropoll_rpc_duration_seconds",
        "Time from a call's start to its status",
        duration.clone(),
    );
}

impl Interceptor for MetricsInterceptor {
    fn start(&self, call: &mut CallStart<'_>) -> Result<(), Status> {
        self.with_method(
            call.side(),
            call.service(),
            call.method(),
            call.method_id(),
            |m| {
                m.in_flight.inc();
            },
        );
        Ok(())
    }

    fn end(&self, call: &CallEnd<'_>) {
        let code = call.code();
        self.with_method(
            call.side(),
            call.service(),
            call.method(),
            call.method_id(),
            |m| {
                m.in_flight.dec();
                m.duration.observe(call.elapsed().as_secs_f64());
                m.calls[code as usize]
                    .get_or_init(|| {
                        self.calls.get_or_create_owned(&CodeLabels {
                            side: m.labels.side.clone(),
                            service: m.labels.service.clone(),
                            method: m.labels.method.clone(),
                            code: code_name(code).to_owned(),
                        })
                    })
                    .inc();
            },
        );
    }
}

/// The canonical upper-case name of `code`.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
