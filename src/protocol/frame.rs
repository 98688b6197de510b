//! Reading size-prefixed frames from a byte stream, with a bound on frame size.

use super::ProtocolError;
use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};

/// Bytes read from the socket per call when more are needed.
const READ_CHUNK_BYTES: usize = 64 << 10;

pub struct FrameReader {
    buf: BytesMut,
    max_frame_bytes: usize,
}

impl FrameReader {
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { buf: BytesMut::with_capacity(READ_CHUNK_BYTES), max_frame_bytes }
    }

    /// The next frame's bytes (without the size prefix); `None` at a clean end of stream.
    pub async fn next<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<Option<Bytes>, ProtocolError> {
        loop {
            if self.buf.len() >= 4 {
                let size = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                if size < 0 || size as usize > self.max_frame_bytes {
                    return Err(ProtocolError::FrameTooLarge(i64::from(size)));
                }
                let total = 4 + size as usize;
                if self.buf.len() >= total {
                    let mut frame = self.buf.split_to(total);
                    let _ = frame.split_to(4);
                    return Ok(Some(frame.freeze()));
                }
                self.buf.reserve(total - self.buf.len());
            }
            let had = self.buf.len();
            let want = (self.buf.capacity() - had).max(READ_CHUNK_BYTES);
            self.buf.resize(had + want, 0);
            let n = stream.read(&mut self.buf[had..]).await;
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(had);
                    return Err(e.into());
                }
            };
            self.buf.truncate(had + n);
            if n == 0 {
                return if had == 0 { Ok(None) } else { Err(ProtocolError::Malformed("connection closed mid-frame".into())) };
            }
        }
    }
}
