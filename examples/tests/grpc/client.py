"""gRPC cases run by Python grpcio (the C-core implementation) against a
ferropoll server: `client.py TARGET PROTO_DIR CASE`. Exits 0 when the case
holds; otherwise prints what differed and exits 1."""

import queue
import sys
import tempfile

import grpc
from grpc_tools import protoc

target, proto_dir, case = sys.argv[1], sys.argv[2], sys.argv[3]

stubs = tempfile.mkdtemp(prefix="ferropoll-grpc-stubs-")
rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={stubs}",
                  f"--grpc_python_out={stubs}", "echo.proto", "kv.proto"])
if rc != 0:
    sys.exit(f"protoc failed ({rc})")
sys.path.insert(0, stubs)
import echo_pb2  # noqa: E402
import echo_pb2_grpc  # noqa: E402
import kv_pb2  # noqa: E402
import kv_pb2_grpc  # noqa: E402


def check(cond, what):
    if not cond:
        sys.exit(f"{case}: {what}")


def fed(q):
    """The requests put on queue `q`, until a None: a stream fed as it goes."""
    while True:
        item = q.get()
        if item is None:
            return
        yield item


def expect_code(fn, code, what):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: got {e.code()} {e.details()!r}, wanted {code}")
        return e
    sys.exit(f"{case}: {what}: succeeded, wanted {code}")


channel = grpc.insecure_channel(target)
grpc.channel_ready_future(channel).result(timeout=10)
echo = echo_pb2_grpc.EchoStub(channel)
kv = kv_pb2_grpc.KvStub(channel)

if case == "unary":
    for payload in [b"hello", b"", bytes(range(256)) * 4]:
        r = echo.Echo(echo_pb2.EchoRequest(payload=payload), timeout=10)
        check(r.payload == payload, f"echo of {len(payload)} bytes came back as {len(r.payload)}")

elif case == "large_unary":
    # Beyond every default HTTP/2 window (65,535): both sides' flow control.
    payload = bytes((i * 31) & 0xFF for i in range(3 << 20))
    r = echo.Echo(echo_pb2.EchoRequest(payload=payload), timeout=30)
    check(r.payload == payload, "3 MiB echo differs")

elif case == "concurrent_unary":
    futures = [echo.Echo.future(echo_pb2.EchoRequest(payload=b"call %d" % i), timeout=20)
               for i in range(300)]
    for i, f in enumerate(futures):
        check(f.result().payload == b"call %d" % i, f"call {i} answered wrongly")

elif case == "status_and_message":
    e = expect_code(lambda: kv.Get(kv_pb2.GetRequest(key="nope"), timeout=10),
                    grpc.StatusCode.NOT_FOUND, "get of a missing key")
    check("nope" in e.details(), f"details {e.details()!r}")
    kv.Put(kv_pb2.PutRequest(key="k", value=b"v"), timeout=10)
    e = expect_code(lambda: kv.Put(kv_pb2.PutRequest(key="k", value=b"w", if_absent=True), timeout=10),
                    grpc.StatusCode.ALREADY_EXISTS, "put if absent of an existing key")
    r = kv.Get(kv_pb2.GetRequest(key="k"), timeout=10)
    check(r.value == b"v", f"get returned {r.value!r}")
    # A message with non-ASCII text and a percent sign survives the
    # percent-encoding of grpc-message.
    e = expect_code(lambda: kv.Get(kv_pb2.GetRequest(key="clé 100%"), timeout=10),
                    grpc.StatusCode.NOT_FOUND, "get of a missing non-ASCII key")
    check("clé 100%" in e.details(), f"details {e.details()!r}")

elif case == "unimplemented":
    call = channel.unary_unary("/echo.Echo/NoSuchMethod")
    e = expect_code(lambda: call(b"", timeout=10), grpc.StatusCode.UNIMPLEMENTED, "unknown method")
    check("NoSuchMethod" in e.details(), f"details {e.details()!r}")
    call = channel.unary_unary("/no.Such/Service")
    expect_code(lambda: call(b"", timeout=10), grpc.StatusCode.UNIMPLEMENTED, "unknown service")
    # The connection still serves.
    check(echo.Echo(echo_pb2.EchoRequest(payload=b"x"), timeout=10).payload == b"x", "echo after")

elif case == "deadline":
    # The server's echo waits 300 ms (rpc-server --tokio-delay-ms 300).
    expect_code(lambda: echo.Echo(echo_pb2.EchoRequest(payload=b"slow"), timeout=0.05),
                grpc.StatusCode.DEADLINE_EXCEEDED, "a 50 ms deadline on a 300 ms handler")
    r = echo.Echo(echo_pb2.EchoRequest(payload=b"patient"), timeout=10)
    check(r.payload == b"patient", "echo with time to spare")

elif case == "bidi_stream":
    # Ping-pong: each message waits for its echo.
    q = queue.Queue()
    responses = echo.EchoStream(fed(q), timeout=30)
    for i in range(100):
        q.put(echo_pb2.EchoRequest(payload=b"ping %d" % i))
        r = next(responses)
        check(r.payload == b"ping %d" % i, f"ping-pong {i} came back as {r.payload!r}")
    q.put(None)
    rest = list(responses)
    check(rest == [], f"{len(rest)} responses after the half-close")
    # Bulk: 3,000 messages of 1 KiB written as fast as the windows allow,
    # then 12 of 512 KiB (each beyond the native window).
    sent = [bytes([i & 0xFF]) * 1024 for i in range(3000)]
    sent += [bytes([i]) * (512 << 10) for i in range(12)]
    # And two larger than the server's HTTP/2 stream window (1 MiB).
    sent += [bytes([7 + i]) * (3 << 20) for i in range(2)]
    got = [r.payload for r in echo.EchoStream(
        (echo_pb2.EchoRequest(payload=p) for p in sent), timeout=60)]
    check(len(got) == len(sent), f"{len(got)} of {len(sent)} echoes")
    check(got == sent, "echoes out of order or changed")
    # An empty stream ends with OK and no messages.
    got = list(echo.EchoStream(iter([]), timeout=10))
    check(got == [], f"{len(got)} echoes of nothing")

elif case == "cancel_stream":
    # Cancel after the first response: the call ends CANCELLED here, the
    # server drops its side, and the connection goes on serving.
    for round in range(20):
        q = queue.Queue()
        call = echo.EchoStream(fed(q), timeout=30)
        q.put(echo_pb2.EchoRequest(payload=b"first"))
        check(next(call).payload == b"first", "first echo")
        call.cancel()
        try:
            next(call)
            sys.exit(f"{case}: a message after cancel")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.CANCELLED, f"code after cancel {e.code()}")
        q.put(None)
    check(echo.Echo(echo_pb2.EchoRequest(payload=b"after"), timeout=10).payload == b"after",
          "unary after the cancels")

elif case == "health":
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    health = health_pb2_grpc.HealthStub(channel)
    SERVING = health_pb2.HealthCheckResponse.SERVING
    for service in ["", "echo.Echo", "kv.Kv"]:
        r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        check(r.status == SERVING, f"Check({service!r}) = {r.status}")
    expect_code(lambda: health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=10),
                grpc.StatusCode.NOT_FOUND, "Check of an unknown service")
    watch = health.Watch(health_pb2.HealthCheckRequest(service="echo.Echo"), timeout=30)
    first = next(watch)
    check(first.status == SERVING, f"Watch first {first.status}")
    watch.cancel()
    unknown = health.Watch(health_pb2.HealthCheckRequest(service="no.Such"), timeout=30)
    check(next(unknown).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN, "Watch of unknown")
    unknown.cancel()

elif case == "compressed":
    # client_compressed_unary: the request gzip-compressed, the answer plain.
    payload = b"compressible " * 20000
    r = echo.Echo(echo_pb2.EchoRequest(payload=payload), timeout=10,
                  compression=grpc.Compression.Gzip)
    check(r.payload == payload, "gzip echo differs")
    got = [x.payload for x in echo.EchoStream(
        (echo_pb2.EchoRequest(payload=b"m%d" % i * 100) for i in range(200)),
        timeout=30, compression=grpc.Compression.Gzip)]
    check(got == [b"m%d" % i * 100 for i in range(200)], "gzip stream echoes differ")
    # A channel compressing everything.
    gz = grpc.insecure_channel(target, compression=grpc.Compression.Gzip)
    r = echo_pb2_grpc.EchoStub(gz).Echo(echo_pb2.EchoRequest(payload=b"x" * 5000), timeout=10)
    check(r.payload == b"x" * 5000, "gzip channel echo")

else:
    sys.exit(f"unknown case {case}")
print(f"{case}: ok")
