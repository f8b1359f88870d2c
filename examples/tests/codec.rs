//! The length-field codec over real sockets: frames split at every byte
//! boundary, many frames coalesced in one read, oversized frames rejected
//! with the connection closed, both dispatch modes, and the codec-server /
//! codec-client binaries.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferropoll_examples::codec::{codec, echo_frames};
use ferropoll_linkbuffer::LinkBuffer;
use ferropoll_transport::testing::{LeakCheck, wait_until};
use ferropoll_transport::{Dispatch, EventLoop, handler_fn};

mod common;
use common::free_port;

fn server(max_frame: usize, dispatch: Dispatch) -> (EventLoop, SocketAddr) {
    let c = codec(max_frame);
    let lp = match dispatch {
        Dispatch::Inline => EventLoop::builder()
            .num_loops(2)
            .build(handler_fn(move |conn| echo_frames(&c, conn)))
            .unwrap(),
        // Blocking reads on a pool worker: one frame per round.
        Dispatch::Pool => EventLoop::builder()
            .num_loops(2)
            .dispatch(Dispatch::Pool)
            .build(handler_fn(move |conn| {
                let mut r = conn.reader();
                let frame = c.read_frame(&mut r)?;
                drop(r);
                let mut w = conn.writer();
                c.encode_buf(frame, &mut w)?;
                w.flush()
            }))
            .unwrap(),
    };
    let addr = lp.listen_tcp("127.0.0.1:0").unwrap().as_tcp().unwrap();
    (lp, addr)
}

fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// The wire bytes of `bodies` framed by the example codec.
fn frames(bodies: &[&[u8]]) -> Vec<u8> {
    let c = codec(1 << 20);
    let mut out = LinkBuffer::new();
    for b in bodies {
        c.encode(b, &mut out).unwrap();
    }
    out.flush();
    out.read_binary(out.len()).unwrap()
}

#[test]
fn frames_split_at_every_byte_boundary() {
    for dispatch in [Dispatch::Inline, Dispatch::Pool] {
        let leaks = LeakCheck::new();
        let (lp, addr) = server(1024, dispatch);
        let wire = frames(&[b"hello", b"world"]);
        for cut in 1..wire.len() {
            let mut s = client(addr);
            let before = lp.stats().bytes_in;
            s.write_all(&wire[..cut]).unwrap();
            // The server has read the first part before the rest is sent.
            assert!(
                wait_until(Duration::from_secs(10), || lp.stats().bytes_in
                    == before + cut as u64),
                "{dispatch:?} cut {cut}: server did not read the first part"
            );
            s.write_all(&wire[cut..]).unwrap();
            let mut back = vec![0u8; wire.len()];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, wire, "{dispatch:?} cut {cut}");
        }
        lp.shutdown(Duration::from_secs(5)).unwrap();
        drop(lp);
        leaks.assert_clean();
    }
}

#[test]
fn many_frames_coalesced_in_one_write_come_back_in_order() {
    for dispatch in [Dispatch::Inline, Dispatch::Pool] {
        let (lp, addr) = server(1 << 20, dispatch);
        let bodies: Vec<Vec<u8>> = (0..2000u32)
            .map(|i| (0..(i % 97)).map(|k| (i + k) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
        let wire = frames(&refs);
        let mut s = client(addr);
        let mut w = s.try_clone().unwrap();
        let to_send = wire.clone();
        let writer = std::thread::spawn(move || w.write_all(&to_send));
        let mut back = vec![0u8; wire.len()];
        s.read_exact(&mut back).unwrap();
        writer.join().unwrap().unwrap();
        assert!(back == wire, "{dispatch:?}: echoed frames differ");
        lp.shutdown(Duration::from_secs(5)).unwrap();
    }
}

#[test]
fn oversized_frames_are_rejected_and_the_connection_closed() {
    let leaks = LeakCheck::new();
    let (lp, addr) = server(1024, Dispatch::Inline);
    // Exactly the maximum (4-byte header + 1020) is fine.
    let mut s = client(addr);
    let ok = frames(&[&[7u8; 1020]]);
    s.write_all(&ok).unwrap();
    let mut back = vec![0u8; ok.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, ok);
    // One more byte: the header alone gets the connection closed, and
    // nothing is echoed.
    s.write_all(&1021u32.to_be_bytes()).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("got {n} bytes back from an oversized frame"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    // A huge length too, on another connection; the server lives on.
    let mut s2 = client(addr);
    s2.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert!(matches!(s2.read(&mut b), Ok(0) | Err(_)));
    assert!(wait_until(Duration::from_secs(5), || lp.stats().open == 0));
    let mut s3 = client(addr);
    let hello = frames(&[b"still here"]);
    s3.write_all(&hello).unwrap();
    let mut back = vec![0u8; hello.len()];
    s3.read_exact(&mut back).unwrap();
    assert_eq!(back, hello);
    drop((s, s2, s3));
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop(lp);
    leaks.assert_clean();
}

#[test]
fn codec_client_prints_hello_and_world_from_codec_server() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_codec-server"))
        .args(["--addr", &addr, "--loops", "4"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = wait_until(Duration::from_secs(20), || {
        TcpStream::connect(&addr).is_ok()
    });
    let out = up.then(|| {
        Command::new(env!("CARGO_BIN_EXE_codec-client"))
            .args(["--addr", &addr])
            .output()
            .unwrap()
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(up, "codec-server did not start");
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "received: hello\nreceived: world\n"
    );
}
