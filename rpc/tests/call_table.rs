//! The client call table: completion from other threads, futures under
//! several executors, deadlines, cancellation, connection loss, bounds.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferropoll_rpc::sansio::CallTable;
use ferropoll_rpc::{CallFuture, Code, LinkBuffer, Status};
use futures::FutureExt;
use prost::Message;

/// A response payload holding `v` (encoded as protobuf `BytesValue`).
fn payload(v: &[u8]) -> LinkBuffer {
    let mut buf = LinkBuffer::new();
    Bytes::copy_from_slice(v).encode(&mut buf).unwrap();
    buf.flush();
    buf
}

fn table(max: usize) -> Arc<CallTable> {
    Arc::new(CallTable::new(max))
}

#[test]
fn completion_from_another_thread_wakes_a_blocking_waiter() {
    let t = table(8);
    let call = t.start::<Bytes>(None).unwrap();
    let seq = call.seq();
    let barrier = Arc::new(Barrier::new(2));
    let completer = {
        let (t, barrier) = (Arc::clone(&t), Arc::clone(&barrier));
        thread::spawn(move || {
            barrier.wait();
            assert!(t.complete(seq, Ok(payload(b"pong"))));
        })
    };
    barrier.wait();
    assert_eq!(&call.wait().unwrap()[..], b"pong");
    completer.join().unwrap();
    assert!(t.is_empty());
}

#[test]
fn sequence_ids_are_distinct_and_nonzero() {
    let t = table(1000);
    let calls: Vec<_> = (0..1000).map(|_| t.start::<()>(None).unwrap()).collect();
    let mut seqs: Vec<u64> = calls.iter().map(CallFuture::seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 1000);
    assert!(seqs[0] > 0);
}

#[test]
fn many_threads_each_get_their_own_response() {
    const THREADS: usize = 64;
    const CALLS: usize = 160; // 10,240 calls
    let t = table(THREADS * 2);
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    // The "loop thread": answers every seq with its own number, out of order.
    let responder = {
        let t = Arc::clone(&t);
        thread::spawn(move || {
            let mut batch = Vec::new();
            let mut answered = 0;
            while answered < THREADS * CALLS {
                batch.push(rx.recv().unwrap());
                while let Ok(seq) = rx.try_recv() {
                    batch.push(seq);
                }
                while let Some(seq) = batch.pop() {
                    assert!(t.complete(seq, Ok(payload(&seq.to_le_bytes()))));
                    answered += 1;
                }
            }
        })
    };
    thread::scope(|s| {
        for _ in 0..THREADS {
            let (t, tx) = (Arc::clone(&t), tx.clone());
            s.spawn(move || {
                for _ in 0..CALLS {
                    let call = t
                        .start::<Bytes>(Some(Instant::now() + Duration::from_secs(30)))
                        .unwrap();
                    let seq = call.seq();
                    tx.send(seq).unwrap();
                    assert_eq!(&call.wait().unwrap()[..], &seq.to_le_bytes());
                }
            });
        }
    });
    responder.join().unwrap();
    assert!(t.is_empty());
}

#[test]
fn future_under_block_on_is_woken_by_another_thread() {
    let t = table(8);
    let call = t.start::<Bytes>(None).unwrap();
    let seq = call.seq();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let completer = {
        let t = Arc::clone(&t);
        thread::spawn(move || {
            go_rx.recv().unwrap();
            assert!(t.complete(seq, Ok(payload(b"async"))));
        })
    };
    let out = futures::executor::block_on(async move {
        let mut call = call;
        // Pending first, so that the completion has to go through the waker.
        assert!(futures::poll!(&mut call).is_pending());
        go_tx.send(()).unwrap();
        call.await
    })
    .unwrap();
    assert_eq!(&out[..], b"async");
    completer.join().unwrap();
}

#[test]
fn futures_under_tokio_are_woken_by_a_foreign_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let t = table(256);
    let calls: Vec<_> = (0..200).map(|_| t.start::<Bytes>(None).unwrap()).collect();
    let seqs: Vec<u64> = calls.iter().map(|c| c.seq()).collect();
    let tasks: Vec<_> = calls.into_iter().map(|c| rt.spawn(c)).collect();
    let completer = {
        let t = Arc::clone(&t);
        thread::spawn(move || {
            for seq in seqs.into_iter().rev() {
                assert!(t.complete(seq, Ok(payload(&seq.to_be_bytes()))));
            }
        })
    };
    rt.block_on(async {
        for (i, task) in tasks.into_iter().enumerate() {
            let out = task.await.unwrap().unwrap();
            assert_eq!(&out[..], &(i as u64 + 1).to_be_bytes());
        }
    });
    completer.join().unwrap();
}

#[test]
fn a_pending_future_stays_pending_until_completed() {
    let t = table(8);
    let mut call = t.start::<Bytes>(None).unwrap();
    assert!((&mut call).now_or_never().is_none());
    assert!((&mut call).now_or_never().is_none());
    assert!(t.complete(call.seq(), Err(Status::not_found("k"))));
    assert_eq!(
        call.now_or_never().unwrap().unwrap_err().code(),
        Code::NotFound
    );
}

#[test]
fn blocking_wait_times_out_at_the_deadline() {
    let t = table(8);
    let start = Instant::now();
    let call = t
        .start::<Bytes>(Some(start + Duration::from_millis(30)))
        .unwrap();
    let seq = call.seq();
    let e = call.wait().unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(t.is_empty(), "the entry is gone");
    assert!(
        !t.complete(seq, Ok(payload(b"late"))),
        "a late response is dropped"
    );
}

#[test]
fn expire_completes_futures_past_their_deadline() {
    let t = table(8);
    let now = Instant::now();
    let mut due = t
        .start::<Bytes>(Some(now + Duration::from_millis(1)))
        .unwrap();
    let mut later = t
        .start::<Bytes>(Some(now + Duration::from_secs(60)))
        .unwrap();
    let mut never = t.start::<Bytes>(None).unwrap();
    assert!((&mut due).now_or_never().is_none());
    assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(1)));
    assert_eq!(t.expire(now), 0, "nothing due yet");
    assert_eq!(t.expire(now + Duration::from_millis(2)), 1);
    assert_eq!(
        due.now_or_never().unwrap().unwrap_err().code(),
        Code::DeadlineExceeded
    );
    assert_eq!(t.next_deadline(), Some(now + Duration::from_secs(60)));
    assert!((&mut later).now_or_never().is_none());
    assert!((&mut never).now_or_never().is_none());
    assert_eq!(t.len(), 2);
}

#[test]
fn a_future_notices_its_deadline_when_polled() {
    let t = table(8);
    let call = t.start::<Bytes>(Some(Instant::now())).unwrap();
    assert_eq!(
        call.now_or_never().unwrap().unwrap_err().code(),
        Code::DeadlineExceeded
    );
    assert!(t.is_empty());
}

#[test]
fn dropping_a_call_cancels_it() {
    let t = table(8);
    let call = t.start::<Bytes>(None).unwrap();
    let seq = call.seq();
    drop(call);
    assert!(t.is_empty());
    assert!(!t.complete(seq, Ok(payload(b"late"))));

    // A future dropped after it was polled (e.g. by tokio::time::timeout).
    let mut call = t.start::<Bytes>(None).unwrap();
    let seq = call.seq();
    assert!((&mut call).now_or_never().is_none());
    drop(call);
    assert!(t.is_empty());
    assert!(!t.complete(seq, Ok(payload(b"late"))));
}

#[test]
fn connection_loss_fails_every_pending_call() {
    let t = table(8);
    let blocking = t.start::<Bytes>(None).unwrap();
    let mut polled = t.start::<Bytes>(None).unwrap();
    assert!((&mut polled).now_or_never().is_none());
    let waiter = thread::spawn(move || blocking.wait());
    t.close(Status::unavailable("connection lost"));
    assert_eq!(
        waiter.join().unwrap().unwrap_err().code(),
        Code::Unavailable
    );
    assert_eq!(
        polled.now_or_never().unwrap().unwrap_err().message(),
        "connection lost"
    );
    assert!(t.is_closed());
    assert_eq!(
        t.start::<Bytes>(None).unwrap_err().code(),
        Code::Unavailable
    );
}

#[test]
fn in_flight_calls_are_bounded() {
    let t = table(4);
    let calls: Vec<_> = (0..4).map(|_| t.start::<Bytes>(None).unwrap()).collect();
    let e = t.start::<Bytes>(None).unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(t.complete(calls[0].seq(), Ok(payload(b""))));
    let again = t.start::<Bytes>(None).unwrap();
    assert_eq!(t.len(), 4);
    drop(again);
    drop(calls);
    assert!(t.is_empty());
}

#[test]
fn an_undecodable_response_is_internal() {
    let t = table(4);
    let call = t.start::<Bytes>(None).unwrap();
    let mut garbage = LinkBuffer::new();
    garbage.write_binary(&[0x0A, 0x7F]); // a length running past the end
    garbage.flush();
    t.complete(call.seq(), Ok(garbage));
    assert_eq!(call.wait().unwrap_err().code(), Code::Internal);
}

#[test]
fn completion_racing_the_deadline_resolves_exactly_once() {
    let t = table(64);
    for round in 0..300u64 {
        let deadline = Instant::now() + Duration::from_micros(200);
        let call = t.start::<Bytes>(Some(deadline)).unwrap();
        let seq = call.seq();
        let completer = {
            let t = Arc::clone(&t);
            thread::spawn(move || {
                while Instant::now() < deadline {
                    std::hint::spin_loop();
                }
                t.complete(seq, Ok(payload(&round.to_le_bytes())))
            })
        };
        let outcome = call.wait();
        let completed = completer.join().unwrap();
        match outcome {
            Ok(v) => {
                assert!(completed);
                assert_eq!(&v[..], &round.to_le_bytes());
            }
            Err(e) => {
                assert_eq!(e.code(), Code::DeadlineExceeded);
                assert!(
                    !completed,
                    "the response was accepted but the caller saw a timeout"
                );
            }
        }
        assert!(t.is_empty());
    }
}

#[test]
fn an_already_failed_future() {
    let f = CallFuture::<Bytes>::failed(Status::unavailable("x"));
    assert_eq!(f.seq(), 0);
    assert_eq!(
        futures::executor::block_on(f).unwrap_err().code(),
        Code::Unavailable
    );
}
