//! Reading size-prefixed frames from a byte stream, with a bound on frame size.

use super::budget::{Budget, Reservation};
use super::ProtocolError;
use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender};
use futures_lite::{AsyncRead, AsyncReadExt};
use std::rc::Rc;

/// Bytes read from the socket per call when more are needed: the first read of a connection (or
/// after its buffer went back) asks for the least, and each read that fills all it asked for
/// doubles the next, up to the most, so a busy connection reads many small frames per call and a
/// quiet one holds little.
const READ_CHUNK_BYTES_MIN: usize = 4 << 10;
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Frames at least this big are read into a buffer of their own, so that what the log keeps of them
/// (it keeps large batches by reference, see `storage::log::SHARED_BATCH_MIN_BYTES`) holds no other
/// frame in memory.
pub const OWN_BUFFER_FRAME_BYTES: usize = 256 << 10;
/// Buffers of large frames come back to the shard that read them when the last reference goes (on
/// whichever shard), to be read into again: a recycled buffer needs neither zeroing nor page faults.
const POOLED_BUFFERS: usize = 4;
const POOLED_BUFFER_BYTES_MAX: usize = 8 << 20;
/// A large frame's buffer starts at most this big and doubles as its bytes arrive: memory follows
/// what a client has sent, never what its size prefix claims (200 connections each claiming 100 MiB
/// and sending nothing more would otherwise take 20 GiB at once).
const LARGE_INITIAL_BYTES: usize = 1 << 20;

thread_local! {
    static POOL: (Sender<Vec<u8>>, Receiver<Vec<u8>>) = crossbeam_channel::bounded(POOLED_BUFFERS);
}

/// A first buffer for a frame of `need` bytes: a recycled one if one of about that size is at hand,
/// else `LARGE_INITIAL_BYTES` at most (it grows as bytes come).
fn take_buffer(need: usize) -> Vec<u8> {
    match POOL.with(|(_, rx)| rx.try_recv()) {
        Ok(buf) if buf.len() >= need && buf.len() <= need * 2 => buf,
        _ => vec![0; need.min(LARGE_INITIAL_BYTES)],
    }
}

/// A large frame's own buffer; `Bytes` of the frame hold it, and the last one returns it home.
struct PooledFrame {
    buf: Vec<u8>,
    len: usize,
    home: Sender<Vec<u8>>,
}

impl AsRef<[u8]> for PooledFrame {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledFrame {
    fn drop(&mut self) {
        if self.buf.len() <= POOLED_BUFFER_BYTES_MAX {
            // A full pool, or a shard gone: the buffer is freed instead.
            let _ = self.home.try_send(std::mem::take(&mut self.buf));
        }
    }
}

/// A large frame being read into its own buffer: `[0, filled)` of `need` bytes are in.
struct Large {
    buf: Vec<u8>,
    filled: usize,
    need: usize,
}

pub struct FrameReader {
    /// Bytes `[0, filled)` came from the socket; the rest is room to read into, initialized once
    /// (a 100 MiB frame read in 64 KiB steps would otherwise zero gigabytes).
    buf: BytesMut,
    filled: usize,
    large: Option<Large>,
    max_frame_bytes: usize,
    /// What the next read asks for beyond the frame in hand (`READ_CHUNK_BYTES_MIN..=READ_CHUNK_BYTES`).
    chunk: usize,
    /// Request bytes in flight on this shard: a frame still to be read is reserved here first.
    budget: Option<Rc<Budget>>,
    /// The reservation of the frame being read, or of the last one returned until the next frame
    /// is asked for (its request served then). A read cancelled mid-frame keeps it.
    held: Option<Reservation>,
    returned: bool,
    /// When the last read returned bytes, and when the frame in hand began to wait for request
    /// memory, if it did: when the frame returned last arrived (`arrived`).
    read_at: std::time::Instant,
    waiting_since: Option<std::time::Instant>,
    arrived: std::time::Instant,
}

impl FrameReader {
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            filled: 0,
            large: None,
            max_frame_bytes,
            chunk: READ_CHUNK_BYTES_MIN,
            budget: None,
            held: None,
            returned: false,
            read_at: std::time::Instant::now(),
            waiting_since: None,
            arrived: std::time::Instant::now(),
        }
    }

    /// Reads frames within `budget`: each frame not yet in hand waits for its size to fit it.
    pub fn within_budget(mut self, budget: Rc<Budget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// When the frame `next` returned last arrived: when its last bytes were read (maybe while an
    /// earlier request of the connection was being handled), or when its size was, if it then
    /// waited for request memory. The request's queue time runs from here.
    pub fn arrived(&self) -> std::time::Instant {
        self.arrived
    }

    fn frame_done(&mut self) {
        self.returned = true;
        self.arrived = self.waiting_since.take().unwrap_or(self.read_at);
    }

    /// The request memory reserved for the frame returned last, for a caller that keeps serving
    /// the request after asking for the next frame (pipelined produces): dropped when it is done.
    pub fn take_reservation(&mut self) -> Option<Reservation> {
        if self.returned {
            self.held.take()
        } else {
            None
        }
    }

    /// Frees the read buffer if it holds no unread bytes; the next `next` waits without one.
    pub fn release_buffer(&mut self) {
        if self.filled == 0 && self.large.is_none() {
            self.buf = BytesMut::new();
            self.chunk = READ_CHUNK_BYTES_MIN;
        }
    }

    /// The next frame's bytes (without the size prefix); `None` at a clean end of stream.
    pub async fn next<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<Option<Bytes>, ProtocolError> {
        // Asking for the next frame means the last one's request is done with.
        if std::mem::take(&mut self.returned) {
            self.held = None;
        }
        loop {
            if let Some(large) = &mut self.large {
                if large.filled == large.need {
                    let Large { buf, need, .. } = self.large.take().expect("checked above");
                    let home = POOL.with(|(tx, _)| tx.clone());
                    self.frame_done();
                    return Ok(Some(Bytes::from_owner(PooledFrame { buf, len: need, home }).slice(4..)));
                }
                if large.filled == large.buf.len() {
                    let grown = (large.buf.len() * 2).min(large.need);
                    large.buf.resize(grown, 0);
                }
                let end = large.buf.len().min(large.need);
                let n = stream.read(&mut large.buf[large.filled..end]).await?;
                if n == 0 {
                    return Err(closed_mid_frame());
                }
                large.filled += n;
                self.read_at = std::time::Instant::now();
                continue;
            }
            if self.filled == 0 && self.buf.is_empty() {
                // No buffer (a new or quiet connection): wait for the first bytes without one, so a
                // connection costs no buffer memory until a request comes.
                let mut head = [0u8; 4];
                let n = stream.read(&mut head).await?;
                if n == 0 {
                    return Ok(None);
                }
                self.buf.resize(self.chunk, 0);
                self.buf[..n].copy_from_slice(&head[..n]);
                self.filled = n;
                self.read_at = std::time::Instant::now();
                continue;
            }
            let mut need = 4;
            if self.filled >= 4 {
                let size = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                if size < 0 || size as usize > self.max_frame_bytes {
                    return Err(ProtocolError::FrameTooLarge(i64::from(size)));
                }
                need = 4 + size as usize;
                if self.filled >= need {
                    let mut frame = self.buf.split_to(need);
                    self.filled -= need;
                    let _ = frame.split_to(4);
                    self.frame_done();
                    return Ok(Some(frame.freeze()));
                }
                if let (Some(budget), None, true) = (&self.budget, &self.held, need > READ_CHUNK_BYTES) {
                    // Over budget, the connection reads nothing more until earlier requests finish.
                    // Frames within a read chunk never wait: heartbeats, metadata and fetches keep
                    // flowing while large produces queue.
                    if !budget.fits(need) {
                        self.waiting_since = Some(std::time::Instant::now());
                    }
                    self.held = Some(budget.reserve(need).await);
                }
                if need >= OWN_BUFFER_FRAME_BYTES {
                    // Everything read so far belongs to this frame (frames follow one another).
                    let mut buf = take_buffer(need);
                    if buf.len() < self.filled {
                        buf.resize(self.filled, 0);
                    }
                    buf[..self.filled].copy_from_slice(&self.buf[..self.filled]);
                    self.large = Some(Large { buf, filled: self.filled, need });
                    self.filled = 0;
                    continue;
                }
            }
            // Room for the rest of this frame, and at least a chunk so small frames batch up.
            let room = need.max(self.filled + self.chunk);
            if self.buf.len() < room {
                self.buf.resize(room, 0);
            }
            let asked = self.buf.len() - self.filled;
            let n = stream.read(&mut self.buf[self.filled..]).await?;
            if n == 0 {
                return if self.filled == 0 { Ok(None) } else { Err(closed_mid_frame()) };
            }
            if n == asked {
                self.chunk = (self.chunk * 2).min(READ_CHUNK_BYTES);
            }
            self.filled += n;
            self.read_at = std::time::Instant::now();
        }
    }
}

fn closed_mid_frame() -> ProtocolError {
    ProtocolError::Malformed("connection closed mid-frame".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<u8> {
        parts.iter().flat_map(|p| (p.len() as i32).to_be_bytes().into_iter().chain(p.iter().copied())).collect()
    }

    #[test]
    fn splits_frames_across_and_within_reads() {
        let big = vec![7u8; 300_000];
        let data = frames(&[b"abc", &big, b"", b"xyz"]);
        let mut reader = FrameReader::new(1 << 20);
        // A reader that returns at most 1000 bytes per call.
        let mut src = futures_lite::io::BufReader::with_capacity(1000, futures_lite::io::Cursor::new(data));
        let got: Vec<Bytes> = futures_lite::future::block_on(async {
            let mut out = Vec::new();
            while let Some(f) = reader.next(&mut src).await.unwrap() {
                out.push(f);
            }
            out
        });
        assert_eq!(got.len(), 4);
        assert_eq!(&got[0][..], b"abc");
        assert_eq!(got[1].len(), 300_000);
        assert!(got[2].is_empty());
        assert_eq!(&got[3][..], b"xyz");
    }

    #[test]
    fn a_large_frame_buffer_is_read_into_again_once_released() {
        let first: Vec<u8> = (0..OWN_BUFFER_FRAME_BYTES as u32 + 5).map(|i| i as u8).collect();
        let second = vec![9u8; OWN_BUFFER_FRAME_BYTES + 1];
        let data = frames(&[&first, b"small", &second]);
        let mut reader = FrameReader::new(1 << 20);
        let mut src = futures_lite::io::BufReader::with_capacity(10_000, futures_lite::io::Cursor::new(data));
        // Buffers another test left in this thread's pool.
        POOL.with(|(_, rx)| while rx.try_recv().is_ok() {});
        futures_lite::future::block_on(async {
            let a = reader.next(&mut src).await.unwrap().unwrap();
            assert_eq!(&a[..], &first[..]);
            let at = a.as_ptr();
            let small = reader.next(&mut src).await.unwrap().unwrap();
            assert_eq!(&small[..], b"small");
            // While `a` lives its buffer is not reused; once dropped, the next large frame gets it.
            drop(a);
            let b = reader.next(&mut src).await.unwrap().unwrap();
            assert_eq!(&b[..], &second[..]);
            assert_eq!(b.as_ptr(), at, "the released buffer was recycled");
            assert!(reader.next(&mut src).await.unwrap().is_none());
        });
    }

    #[test]
    fn memory_follows_the_bytes_sent_not_the_size_claimed() {
        // A 100 MiB claim followed by 10 bytes: the buffer stays at its first size.
        let mut claim = (100i32 << 20).to_be_bytes().to_vec();
        claim.extend_from_slice(&[1; 10]);
        let mut reader = FrameReader::new(200 << 20);
        let mut src = futures_lite::io::Cursor::new(claim);
        assert!(futures_lite::future::block_on(reader.next(&mut src)).is_err(), "ends mid-frame");
        let large = reader.large.as_ref().expect("reading a large frame");
        assert!(large.buf.len() <= LARGE_INITIAL_BYTES, "{} bytes allocated for 14 received", large.buf.len());
        // A frame bigger than the first buffer grows into it whole.
        let big: Vec<u8> = (0..3 * LARGE_INITIAL_BYTES as u32 + 7).map(|i| (i % 251) as u8).collect();
        let mut reader = FrameReader::new(200 << 20);
        let mut src = futures_lite::io::BufReader::with_capacity(100_000, futures_lite::io::Cursor::new(frames(&[&big, b"next"])));
        futures_lite::future::block_on(async {
            assert_eq!(&reader.next(&mut src).await.unwrap().unwrap()[..], &big[..]);
            assert_eq!(&reader.next(&mut src).await.unwrap().unwrap()[..], b"next");
        });
    }

    #[test]
    fn no_buffer_until_bytes_come_and_none_after_release() {
        let mut reader = FrameReader::new(1 << 20);
        assert_eq!(reader.buf.capacity(), 0);
        let mut src = futures_lite::io::BufReader::with_capacity(3, futures_lite::io::Cursor::new(frames(&[b"one", b"two"])));
        futures_lite::future::block_on(async {
            assert_eq!(&reader.next(&mut src).await.unwrap().unwrap()[..], b"one");
            assert!(reader.filled > 0, "part of the next frame is buffered");
            reader.release_buffer();
            assert!(reader.buf.capacity() > 0, "a buffer holding unread bytes is kept");
            assert_eq!(&reader.next(&mut src).await.unwrap().unwrap()[..], b"two");
            reader.release_buffer();
            assert_eq!(reader.buf.capacity(), 0);
            assert!(reader.next(&mut src).await.unwrap().is_none());
        });
    }

    #[test]
    fn oversized_and_negative_sizes_are_refused() {
        for size in [2_000_000i32, -1] {
            let mut reader = FrameReader::new(1 << 20);
            let mut src = futures_lite::io::Cursor::new(size.to_be_bytes().to_vec());
            let r = futures_lite::future::block_on(reader.next(&mut src));
            assert!(matches!(r, Err(ProtocolError::FrameTooLarge(_))));
        }
    }
}
