//! Cross-shard mailboxes: crossbeam channels with a wake-up that neither blocks nor spins.
//!
//! Measured on this machine: a blocking `recv()` inside an executor freezes it, `try_recv` plus
//! `yield_now` starves its timers, and glommio's `shared_channel` is slow and hung under load. So each
//! shard has a crossbeam channel for jobs and one end of a socket pair for wake-ups. The shard drains
//! its channel, marks itself parked, re-checks, and then waits on a read of the socket through
//! io_uring like any other I/O. A sender writes one byte to the socket only when it finds the
//! receiver parked, so a busy shard pays no syscall per message.

use crossbeam_channel::{Receiver, Sender};
use futures_lite::AsyncReadExt;
use std::future::Future;
use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Work handed to another shard. It runs on that shard's thread and must not block: anything that
/// waits spawns a local task.
pub type Job = Box<dyn FnOnce() + Send>;

/// Upper bound on jobs run back to back before the mailbox yields to the shard's other tasks.
const JOBS_PER_TURN_MAX: usize = 64;

struct Inbox {
    tx: Sender<Job>,
    rx: Receiver<Job>,
    parked: AtomicBool,
    wake_tx: StdUnixStream,
    wake_rx: Mutex<Option<StdUnixStream>>,
}

/// One inbox per shard, shared by all shards (the channels are the only thing they share).
pub struct Mailboxes {
    inboxes: Vec<Inbox>,
}

impl Mailboxes {
    pub(crate) fn new(count: usize) -> Self {
        let inboxes = (0..count)
            .map(|_| {
                let (tx, rx) = crossbeam_channel::unbounded();
                let (wake_tx, wake_rx) = StdUnixStream::pair().expect("socketpair for shard wake-up");
                wake_tx.set_nonblocking(true).expect("non-blocking wake-up socket");
                Inbox { tx, rx, parked: AtomicBool::new(false), wake_tx, wake_rx: Mutex::new(Some(wake_rx)) }
            })
            .collect();
        Self { inboxes }
    }

    /// Queues `job` to run on shard `target`.
    pub fn send(&self, target: usize, job: Job) {
        let inbox = &self.inboxes[target];
        // The receiver only goes away when its shard has ended; a job sent then has nobody to run it.
        if inbox.tx.send(job).is_err() {
            return;
        }
        if inbox.parked.swap(false, Ordering::SeqCst) {
            // A full socket buffer already holds a pending wake-up, so WouldBlock is fine to ignore.
            let _ = (&inbox.wake_tx).write(&[1]);
        }
    }

    /// Runs the jobs of shard `id` forever. Called once per shard by the runtime.
    pub(crate) async fn serve(&self, id: usize) {
        let inbox = &self.inboxes[id];
        let wake_rx = inbox.wake_rx.lock().expect("wake-up socket lock").take().expect("serve called once per shard");
        // SAFETY: the fd comes from a socket we own and hand over whole (into_raw_fd gives up ownership).
        let mut wake_rx = unsafe { glommio::net::UnixStream::from_raw_fd(wake_rx.into_raw_fd()) };
        let mut scratch = [0u8; 64];
        loop {
            let mut ran = 0;
            while let Ok(job) = inbox.rx.try_recv() {
                job();
                ran += 1;
                if ran == JOBS_PER_TURN_MAX {
                    ran = 0;
                    glommio::yield_if_needed().await;
                }
            }
            inbox.parked.store(true, Ordering::SeqCst);
            if !inbox.rx.is_empty() {
                inbox.parked.store(false, Ordering::SeqCst);
                continue;
            }
            if wake_rx.read(&mut scratch).await.is_err() {
                return;
            }
            inbox.parked.store(false, Ordering::SeqCst);
        }
    }

    /// Runs `f` on shard `target` and brings its result back to shard `from`.
    pub(crate) async fn call<F, Fut, R>(self: &Arc<Self>, from: usize, target: usize, f: F) -> R
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        if from == target {
            return f().await;
        }
        let slot = Arc::new(Mutex::new(Slot { value: None, waker: None }));
        let remote_slot = slot.clone();
        let mailboxes = self.clone();
        self.send(
            target,
            Box::new(move || {
                glommio::spawn_local(async move {
                    let value = f().await;
                    remote_slot.lock().expect("reply slot").value = Some(value);
                    // The waker belongs to the caller's executor: wake it from there.
                    mailboxes.send(
                        from,
                        Box::new(move || {
                            let waker = remote_slot.lock().expect("reply slot").waker.take();
                            if let Some(waker) = waker {
                                waker.wake();
                            }
                        }),
                    );
                })
                .detach();
            }),
        );
        Reply { slot }.await
    }
}

struct Slot<R> {
    value: Option<R>,
    waker: Option<Waker>,
}

struct Reply<R> {
    slot: Arc<Mutex<Slot<R>>>,
}

impl<R> Future for Reply<R> {
    type Output = R;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let mut slot = self.slot.lock().expect("reply slot");
        match slot.value.take() {
            Some(value) => Poll::Ready(value),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
