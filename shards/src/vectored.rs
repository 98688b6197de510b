//! Memory → socket sends of many buffers at once, on the shard's own thread.
//!
//! A Fetch response read from the cache is a few encoded bytes and many batches, each in its own
//! buffer. Gathering them into one buffer before the send cost a third of a shard's time when
//! consumers read from the cache (memmove 33%). `sendmsg` with the buffers as they are lets the
//! kernel copy each once, straight into the socket. The call is non-blocking (`MSG_DONTWAIT`),
//! like glommio's own first try of a send, so it runs on the shard without a hop to another
//! thread (a hop through the blocking pool made librdkafka's small-record consumer slower); when
//! the socket is full, one ordinary write through the stream waits for room.

use futures_lite::AsyncWriteExt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// At most this many buffers a call (the kernel's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Sends `bufs`, in order, as one stream of bytes.
pub async fn send_buffers<B: AsRef<[u8]>>(stream: &mut crate::TcpStream, bufs: &[B]) -> io::Result<()> {
    let sock = stream.as_raw_fd();
    let mut at = Cursor::default();
    // Past leading empty buffers: a full socket then waits on one that has bytes.
    at.advance(bufs, 0);
    while at.first < bufs.len() {
        match send_some(sock, bufs, at) {
            Ok(n) => at.advance(bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The socket is full: the stream waits for room without holding the shard.
                let rest = &bufs[at.first].as_ref()[at.skip..];
                let n = stream.write(rest).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                at.advance(bufs, n);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where the next byte to send is: buffer `first`, `skip` bytes in.
#[derive(Clone, Copy, Default)]
struct Cursor {
    first: usize,
    skip: usize,
}

impl Cursor {
    /// Moves past `n` sent bytes, and past any empty buffers after them.
    fn advance<B: AsRef<[u8]>>(&mut self, bufs: &[B], mut n: usize) {
        while self.first < bufs.len() && n >= bufs[self.first].as_ref().len() - self.skip {
            n -= bufs[self.first].as_ref().len() - self.skip;
            (self.first, self.skip) = (self.first + 1, 0);
        }
        self.skip += n;
    }
}

/// One non-blocking `sendmsg` of up to `IOV_MAX` buffers from `at`.
fn send_some<B: AsRef<[u8]>>(sock: RawFd, bufs: &[B], at: Cursor) -> io::Result<usize> {
    let iov: Vec<libc::iovec> = bufs[at.first..]
        .iter()
        .take(IOV_MAX)
        .enumerate()
        .map(|(i, b)| {
            let b = &b.as_ref()[if i == 0 { at.skip } else { 0 }..];
            libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() }
        })
        .collect();
    // SAFETY: zeroed is a valid msghdr (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: every iovec points into a live buffer of `bufs` with its length; the kernel only
    // reads them during the call. MSG_NOSIGNAL: a closed peer is an error, not a SIGPIPE.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many buffers (more than one call takes), empty ones among them, through a socket whose
    /// buffer fills while nobody reads for a while: every byte arrives once, in order.
    #[test]
    fn sends_every_buffer_in_order() {
        let bufs: Vec<Vec<u8>> = (0..3000).map(|i| vec![(i % 251) as u8; [0, 1, 700, 9000][i % 4]]).collect();
        let expected: Vec<u8> = bufs.concat();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut conn, &mut got).unwrap();
            got
        });
        let sent = glommio::LocalExecutor::default().run(async move {
            let mut stream = crate::TcpStream::connect(addr).await.unwrap();
            send_buffers(&mut stream, &bufs).await
        });
        sent.unwrap();
        assert!(reader.join().unwrap() == expected, "the bytes arrived as they were sent");
    }
}
