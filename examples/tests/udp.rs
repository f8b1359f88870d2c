//! The UDP example pair: udp-echo-server under a short udp-bench run, and
//! the load library against an in-process server.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferropoll_examples::udp_load::{LoadConfig, check, fill, run};
use ferropoll_transport::testing::{LeakCheck, wait_until};
use ferropoll_transport::{EventLoop, handler_fn, udp_handler_fn};

#[test]
fn load_payloads_check_their_own_bytes() {
    let mut b = Vec::new();
    fill(&mut b, 64, 3, 7, 99);
    assert_eq!(check(&b, 64), Some((3, 7, 99)));
    b[40] ^= 1;
    assert_eq!(check(&b, 64), None, "a flipped byte is caught");
    fill(&mut b, 64, 3, 7, 99);
    assert_eq!(check(&b[..63], 64), None, "a short datagram is caught");
}

#[test]
fn udp_load_against_an_in_process_echo_server() {
    let leaks = LeakCheck::new();
    let lp = EventLoop::builder()
        .num_loops(1)
        .build(handler_fn(|_| Ok(())))
        .unwrap();
    let ep = lp
        .listen_udp(
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            udp_handler_fn(|d, p, out| out.send_to(d, p)),
        )
        .unwrap();
    let report = run(
        &LoadConfig {
            addr: ep.local_addr(),
            flows: 4,
            window: 8,
            size: 64,
            warmup: Duration::from_millis(100),
            secs: Duration::from_millis(400),
            loss_timeout: Duration::from_millis(200),
        },
        false,
    )
    .unwrap();
    eprintln!("{}", report.line());
    assert_eq!(report.errors, 0);
    assert!(report.replies > 0);
    assert!(report.total_replies <= report.total_sent);
    // Every echo the load counted went through the server. The loop counts
    // a send after `sendmmsg` returns, so the client may see a reply
    // before the count moves: wait (bounded) for it to catch up.
    assert!(
        wait_until(Duration::from_secs(5), || lp.stats().datagrams_out
            >= report.total_replies),
        "server sent {} datagrams, the load got {} replies",
        lp.stats().datagrams_out,
        report.total_replies
    );
    lp.shutdown(Duration::from_secs(5)).unwrap();
    drop((lp, ep));
    leaks.assert_clean();
}

#[test]
fn udp_bench_against_udp_echo_server_binary() {
    // A free UDP port (bound, then released).
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut server = Command::new(env!("CARGO_BIN_EXE_udp-echo-server"))
        .args(["--addr", &addr.to_string(), "--loops", "1"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Up once it echoes.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let up = wait_until(Duration::from_secs(20), || {
        let _ = probe.send_to(b"?", addr);
        let mut b = [0u8; 4];
        probe.recv_from(&mut b).is_ok()
    });
    let out = up.then(|| {
        Command::new(env!("CARGO_BIN_EXE_udp-bench"))
            .args([
                "--addr",
                &addr.to_string(),
                "--secs",
                "0.5",
                "--warmup",
                "0.2",
                "--quiet",
            ])
            .output()
            .unwrap()
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(up, "udp-echo-server did not answer");
    let out = out.unwrap();
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line}"))
    };
    assert!(get("dgrams_per_s") > 0.0, "{line}");
    assert_eq!(get("errors"), 0.0, "{line}");
}
