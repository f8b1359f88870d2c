//! The `Client` and the generated stubs, in process (no sockets; see
//! `net.rs` for the same over sockets).

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use common::echo::{EchoClient, EchoRequest, EchoServer};
use common::kv::{self, KvClient, KvServer};
use common::{EchoImpl, MemKv};
use ferropoll_rpc::{CallOptions, Client, ClientOptions, Code, Dispatch, ServerEngine};

fn client() -> Client {
    let mut engine = ServerEngine::new();
    engine
        .register(EchoServer::new(EchoImpl::default()))
        .unwrap();
    engine
        .register(KvServer::new(MemKv::default()))
        .unwrap()
        .method_dispatch("List", Dispatch::Pool)
        .unwrap();
    Client::in_process(Arc::new(engine), ClientOptions::default())
}

fn echo_req(p: &'static [u8]) -> EchoRequest {
    EchoRequest {
        payload: Bytes::from_static(p),
    }
}

#[test]
fn kv_through_the_generated_stub() {
    let kv = KvClient::new(client());
    let put = |k: &str, v: &'static [u8], if_absent| {
        kv.put(&kv::PutRequest {
            key: k.into(),
            value: Bytes::from_static(v),
            if_absent,
        })
    };
    assert!(!put("b", b"2", false).unwrap().replaced);
    assert!(put("b", b"22", false).unwrap().replaced);
    assert_eq!(
        put("b", b"x", true).unwrap_err().code(),
        Code::AlreadyExists
    );
    assert_eq!(
        put("", b"x", false).unwrap_err().code(),
        Code::InvalidArgument
    );
    put("a", b"1", false).unwrap();
    put("c", b"3", false).unwrap();
    put("other", b"4", false).unwrap();

    let get = kv.get(&kv::GetRequest { key: "b".into() }).unwrap();
    assert_eq!(&get.value[..], b"22");
    let missing = kv.get(&kv::GetRequest { key: "zz".into() }).unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let page = kv
        .list(&kv::ListRequest {
            prefix: String::new(),
            start_after: "a".into(),
            limit: 2,
        })
        .unwrap();
    let keys: Vec<_> = page.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["b", "c"]);
    assert!(page.truncated);

    let deleted = kv.delete(&kv::DeleteRequest { key: "a".into() }).unwrap();
    assert_eq!(&deleted.value[..], b"1");
    assert_eq!(
        kv.delete(&kv::DeleteRequest { key: "a".into() })
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[test]
fn options_carry_metadata_and_a_deadline() {
    let echo = EchoClient::new(client());
    let opts = CallOptions::new()
        .with_metadata("k", "v1")
        .with_timeout(Duration::from_secs(5));
    assert_eq!(
        &echo.echo_with(&echo_req(b"meta"), &opts).unwrap().payload[..],
        b"v1"
    );
    let ctx = echo.echo_with(&echo_req(b"ctx"), &opts).unwrap();
    assert!(ctx.payload.starts_with(b"echo.Echo/Echo/"));
    assert!(ctx.payload.ends_with(b"/true"), "deadline sent");
    assert_eq!(
        &echo.echo(&echo_req(b"peer")).unwrap().payload[..],
        b"in-process"
    );
}

#[test]
fn async_forms_under_block_on_and_tokio() {
    let echo = EchoClient::new(client());
    let out = futures::executor::block_on(echo.echo_async(&echo_req(b"hi"))).unwrap();
    assert_eq!(&out.payload[..], b"hi");

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let kv = KvClient::new(echo.client().clone());
    rt.block_on(async {
        kv.put_async(&kv::PutRequest {
            key: "k".into(),
            value: Bytes::from_static(b"v"),
            if_absent: false,
        })
        .await
        .unwrap();
        let got = kv
            .get_async_with(
                &kv::GetRequest { key: "k".into() },
                &CallOptions::new().with_timeout(Duration::from_secs(1)),
            )
            .await
            .unwrap();
        assert_eq!(&got.value[..], b"v");
        let e = echo.echo_async(&echo_req(b"panic")).await.unwrap_err();
        assert_eq!(e.code(), Code::Internal);
    });
}

#[test]
fn unknown_method_and_service_through_the_client() {
    let c = client();
    let e = c
        .unary::<_, ()>("echo.Echo", "Nope", &(), &CallOptions::DEFAULT)
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    let e = c
        .unary::<_, ()>("nope.Nope", "Echo", &(), &CallOptions::DEFAULT)
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
}

#[test]
fn ten_thousand_calls_from_64_threads() {
    let echo = EchoClient::new(client());
    thread::scope(|s| {
        for t in 0..64u32 {
            let echo = echo.clone();
            s.spawn(move || {
                for i in 0..160u32 {
                    let mine = format!("{t}-{i}");
                    let out = echo
                        .echo(&EchoRequest {
                            payload: Bytes::from(mine.clone()),
                        })
                        .unwrap();
                    assert_eq!(out.payload, mine.as_bytes());
                }
            });
        }
    });
}

#[test]
fn ping_and_oneway() {
    let c = client();
    c.ping(Duration::from_secs(1)).unwrap();
    c.oneway("echo.Echo", "Echo", &echo_req(b"x"), &CallOptions::DEFAULT)
        .unwrap();
}

#[test]
fn a_request_over_the_frame_limit_is_not_sent() {
    let mut engine = ServerEngine::with_limits(ferropoll_rpc::Limits {
        max_body_len: 1000,
        ..Default::default()
    });
    engine
        .register(EchoServer::new(EchoImpl::default()))
        .unwrap();
    let echo = EchoClient::new(Client::in_process(
        Arc::new(engine),
        ClientOptions::default(),
    ));
    let e = echo
        .echo(&EchoRequest {
            payload: Bytes::from(vec![0; 2000]),
        })
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().starts_with("request not sent"), "{e}");
    // The client is still usable.
    assert_eq!(&echo.echo(&echo_req(b"ok")).unwrap().payload[..], b"ok");
}

#[test]
fn connect_rejects_bad_addresses_and_dead_servers() {
    // A port nobody listens on: refused at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = Client::connect(&format!("127.0.0.1:{port}"), ClientOptions::default()).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("cannot connect"), "{e}");
    let e = Client::connect("not an address", ClientOptions::default()).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = Client::connect("unix:/nonexistent/x.sock", ClientOptions::default()).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
}
