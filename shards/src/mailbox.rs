//! Cross-shard mailboxes: crossbeam channels with a wake-up that neither blocks nor spins.
//!
//! Measured on this machine: a blocking `recv()` inside an executor freezes it, `try_recv` plus
//! `yield_now` starves its timers, and glommio's `shared_channel` is slow and hung under load. So each
//! shard has a crossbeam channel for jobs and one end of a socket pair for wake-ups. The shard drains
//! its channel, marks itself parked, re-checks, and then waits on a read of the socket through
//! io_uring like any other I/O. A sender writes one byte to the socket only when it finds the
//! receiver parked, so a busy shard pays no syscall per message.
//!
//! Waking a parked shard costs two thread wake-ups per round trip (~55 µs p50 here). So a shard that
//! just ran jobs, or awaits replies, first spins on its channel for up to `SPIN` — unless the
//! executor has other I/O to handle (`need_preempt`) — before it parks.

use crossbeam_channel::{Receiver, Sender};
use futures_lite::AsyncReadExt;
use std::future::Future;
use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Work handed to another shard. It runs on that shard's thread and must not block: anything that
/// waits spawns a local task.
pub type Job = Box<dyn FnOnce() + Send>;

/// Upper bound on jobs run back to back before the mailbox yields to the shard's other tasks.
const JOBS_PER_TURN_MAX: usize = 64;
/// How long an active mailbox spins for the next job before it parks.
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

struct Inbox {
    tx: Sender<Job>,
    rx: Receiver<Job>,
    parked: AtomicBool,
    /// Calls from this shard waiting for their reply (only this shard changes it).
    awaiting: AtomicUsize,
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
                Inbox { tx, rx, parked: AtomicBool::new(false), awaiting: AtomicUsize::new(0), wake_tx, wake_rx: Mutex::new(Some(wake_rx)) }
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

    /// Runs `job` on every shard from a thread outside them and waits up to `within` for the
    /// answers: by shard, `None` for one that did not answer in time.
    pub fn ask_all<T: Send + 'static>(&self, job: fn() -> T, within: std::time::Duration) -> Vec<Option<T>> {
        let n = self.count();
        let (tx, rx) = crossbeam_channel::bounded(n);
        for shard in 0..n {
            let tx = tx.clone();
            self.send(
                shard,
                Box::new(move || {
                    let _ = tx.send((shard, job()));
                }),
            );
        }
        let deadline = std::time::Instant::now() + within;
        let mut answers: Vec<Option<T>> = (0..n).map(|_| None).collect();
        for _ in 0..n {
            match rx.recv_deadline(deadline) {
                Ok((shard, answer)) => answers[shard] = Some(answer),
                Err(_) => break,
            }
        }
        answers
    }

    /// Jobs waiting in shard `target`'s mailbox (a gauge for the metrics; racy by nature).
    pub fn depth(&self, target: usize) -> usize {
        self.inboxes[target].rx.len()
    }

    /// Shards served by these mailboxes.
    pub fn count(&self) -> usize {
        self.inboxes.len()
    }

    /// Runs the jobs of shard `id` forever. Called once per shard by the runtime.
    pub(crate) async fn serve(&self, id: usize) {
        let inbox = &self.inboxes[id];
        let wake_rx = inbox.wake_rx.lock().expect("wake-up socket lock").take().expect("serve called once per shard");
        // SAFETY: the fd comes from a socket we own and hand over whole (into_raw_fd gives up ownership).
        let mut wake_rx = unsafe { glommio::net::UnixStream::from_raw_fd(wake_rx.into_raw_fd()) };
        let mut scratch = [0u8; 64];
        let mut hot = false;
        loop {
            let mut ran = 0;
            while let Ok(job) = inbox.rx.try_recv() {
                job();
                ran += 1;
                if ran == JOBS_PER_TURN_MAX {
                    break;
                }
            }
            if ran > 0 {
                // Let the tasks those jobs spawned run, then look again.
                hot = true;
                futures_lite::future::yield_now().await;
                continue;
            }
            if std::mem::take(&mut hot) || inbox.awaiting.load(Ordering::Relaxed) > 0 {
                let until = std::time::Instant::now() + SPIN;
                while inbox.rx.is_empty() && std::time::Instant::now() < until && !glommio::executor().need_preempt() {
                    std::hint::spin_loop();
                }
                if !inbox.rx.is_empty() {
                    continue;
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
        // Counted while in flight, also if the caller gives up (drops this future) early.
        let _awaiting = Awaiting::new(&self.inboxes[from].awaiting);
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

struct Awaiting<'a>(&'a AtomicUsize);

impl<'a> Awaiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Awaiting(count)
    }
}

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
