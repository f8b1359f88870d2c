//! The RESP fuzz check, shared by the fuzz target (`resp.rs`) and the
//! corpus replay test (`examples/tests/fuzz_corpus.rs`); both include
//! `src/resp/parse.rs` as the sibling module `parse`.
//!
//! Input: the first byte picks the size of the reads fed to the incremental
//! parser (1 to 64 bytes); the rest is what a client sent.

use ferropoll_linkbuffer::LinkBuffer;

use super::parse::{Fast, Limits, Partial, ProtocolError, Step, parse_fast};

/// Small limits, so that inputs of a few hundred bytes reach every bound.
const LIMITS: Limits = Limits {
    max_bulk_len: 1024,
    max_multibulk_len: 64,
    max_inline_len: 256,
    max_command_bytes: 4096,
};

/// What a parser made of the input: the commands, then how it stopped.
#[derive(Debug, Default)]
struct Outcome {
    commands: Vec<Vec<Vec<u8>>>,
    error: Option<ProtocolError>,
}

/// The fast path over the whole input as one slice, as the server runs it
/// over its first input node.
fn fast(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    let mut ranges = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let buf = &data[off..];
        match parse_fast(buf, &LIMITS, &mut ranges) {
            Fast::Command(n) => {
                assert!(n > 0 && n <= buf.len(), "command of {n} bytes");
                out.commands.push(
                    ranges
                        .iter()
                        .map(|&(o, l)| buf[o..o + l].to_vec())
                        .collect(),
                );
                off += n;
            }
            Fast::Empty(n) => {
                assert!(n > 0 && n <= buf.len(), "empty of {n} bytes");
                off += n;
            }
            Fast::Incomplete => break,
            Fast::Error(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    out
}

/// The incremental parser, fed `piece` bytes per read.
fn incremental(data: &[u8], piece: usize) -> Outcome {
    let mut out = Outcome::default();
    let mut buf = LinkBuffer::new();
    let mut partial = Partial::default();
    let mut fed = 0;
    // Each step consumes input, completes a command or asks for more:
    // bounded by a few steps per byte.
    for _ in 0..4 * data.len() + 16 {
        match partial.step(&mut buf, &LIMITS) {
            Step::Command(args) => out.commands.push(args.iter().map(|a| a.to_vec()).collect()),
            Step::Empty => {}
            Step::NeedMore(n) => {
                assert!(n > buf.len(), "NeedMore({n}) with {} readable", buf.len());
                if fed == data.len() {
                    return out;
                }
                let end = (fed + piece).min(data.len());
                buf.write_binary(&data[fed..end]);
                buf.flush();
                fed = end;
            }
            Step::Error(e) => {
                out.error = Some(e);
                return out;
            }
        }
        buf.release();
    }
    panic!("the incremental parser made no progress");
}

/// Runs both parsers over `data` and checks that they agree.
pub fn run(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split % 64) + 1;
    let fast = fast(data);
    let slow = incremental(data, piece);
    // The fast path only sees one slice and gives up (`Incomplete`) where
    // the server falls back to the incremental parser, so its commands are
    // a prefix of the incremental parser's; where it reports an error, the
    // incremental parser stops after the same commands: with an error (not
    // always the same kind: `*1\r\r\n` is "expected CRLF" to the fast path
    // and "invalid multibulk length" to the incremental one), or still
    // waiting for the end of a malformed header line the fast path already
    // refused. Either way the client gets a protocol error and is closed.
    assert!(
        fast.commands.len() <= slow.commands.len(),
        "fast {fast:?} vs incremental {slow:?}"
    );
    assert_eq!(
        fast.commands[..],
        slow.commands[..fast.commands.len()],
        "commands differ"
    );
    if fast.error.is_some() {
        assert_eq!(
            slow.commands.len(),
            fast.commands.len(),
            "fast {fast:?} vs incremental {slow:?}"
        );
    }
    // A multibulk command has at most `max_multibulk_len` arguments; an
    // inline one is bounded by its line instead (as in Redis, whose inline
    // commands have no argument limit): one byte and a separator each.
    let max_args = LIMITS.max_multibulk_len.max(LIMITS.max_inline_len / 2 + 1);
    for cmd in &slow.commands {
        assert!(!cmd.is_empty() && cmd.len() <= max_args);
        let bytes: usize = cmd.iter().map(Vec::len).sum();
        assert!(bytes <= LIMITS.max_command_bytes);
    }
}
