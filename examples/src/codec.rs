//! The length-field framing of `codec-server` / `codec-client` (gnet's v1
//! codec example): a 4-byte big-endian length, then the body; the server
//! echoes each frame.

use std::io;
use std::time::Duration;

use ferropoll_transport::Connection;
use ferropoll_transport::codec::LengthFieldCodec;

/// Largest frame the example server accepts (header included); a longer
/// one closes the connection.
pub const MAX_FRAME: usize = 1 << 20;

/// The codec: u32 big-endian length of the body, then the body.
pub fn codec(max_frame: usize) -> LengthFieldCodec {
    LengthFieldCodec::builder()
        .width(4)
        .max_frame(max_frame)
        .build()
        .expect("a valid codec")
}

/// Echoes every whole frame of the connection's input; an incomplete
/// frame waits for more input (`WouldBlock`), a bad one closes the
/// connection (`InvalidData`). Frames are zero-copy views re-framed into
/// the output and sent with one `sendmsg` per round.
pub fn echo_frames(codec: &LengthFieldCodec, conn: &Connection) -> io::Result<()> {
    let mut frames = Vec::new();
    {
        let mut r = conn.reader();
        while let Some(frame) = codec.decode(&mut r)? {
            frames.push(frame);
        }
    }
    if frames.is_empty() {
        return Ok(());
    }
    let mut w = conn.writer();
    for frame in frames {
        codec.encode_buf(frame, &mut w)?;
    }
    w.flush()
}

/// Sends `body` as one frame on a dialed (blocking) connection and
/// returns the frame that comes back.
pub fn round_trip(
    codec: &LengthFieldCodec,
    conn: &Connection,
    body: &[u8],
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    conn.set_read_timeout(Some(timeout));
    {
        let mut w = conn.writer();
        codec.encode(body, &mut w)?;
        w.flush()?;
    }
    let mut r = conn.reader();
    let mut frame = codec.read_frame(&mut r)?;
    let n = frame.len();
    frame
        .read_binary(n)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
