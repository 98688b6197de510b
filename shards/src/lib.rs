//! Weir's thread-per-core runtime.
//!
//! Owns the executors (one glommio executor per shard, pinned to a core), the mailboxes that let
//! shards talk to each other, the watcher that runs light shards at real-time priority, and
//! re-exports the I/O types (DMA files, TCP sockets, timers) that the rest of Weir uses, so that a
//! change of runtime stays a change to this crate alone.
//!
//! It knows nothing of Kafka. It must never let two shards share mutable state: all a shard hands
//! another is a `Send` closure through the mailbox.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod fs;
mod mailbox;
mod notify;
mod placement;
mod priority;
mod sendfile;
mod vectored;

pub use mailbox::{Job, Mailboxes};
pub use notify::{Notified, Notify, Turn, TurnHeld};
pub use placement::{placement, stable_hash};
pub use priority::{demotions, realtime};
pub use sendfile::{send_file, FileRange};
pub use vectored::send_buffers;

use std::cell::Cell;
use std::sync::Arc;

pub use glommio::net::{TcpListener, TcpStream};
pub use glommio::timer::{sleep, Timer};
pub use glommio::{spawn_local, yield_if_needed, Task};

/// `fut`'s output, or `None` if it takes longer than `limit` (then `fut` is dropped).
pub async fn within<T>(limit: std::time::Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep(limit).await;
        None
    })
    .await
}

/// The executor running the caller: a state kept per executor (a background task it runs) is kept
/// under this id, since a thread may run more than one executor in turn (tests).
pub fn executor_id() -> usize {
    glommio::executor().id()
}

thread_local! {
    static BUSY: Cell<std::time::Duration> = const { Cell::new(std::time::Duration::ZERO) };
}

/// How long this shard's executor has spent running tasks since it started (its busy time).
pub fn busy_time() -> std::time::Duration {
    // glommio hands out its stats since the last call, and resets them.
    let since = glommio::executor().executor_stats().total_runtime();
    BUSY.with(|b| {
        b.set(b.get() + since);
        b.get()
    })
}

/// Errors of the runtime's I/O operations.
pub type RuntimeError = glommio::GlommioError<()>;

thread_local! {
    static SHARD_ID: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the shard running on this thread; `None` outside a shard.
pub fn current_shard() -> Option<usize> {
    SHARD_ID.with(|s| s.get())
}

/// Panics unless the caller runs on `shard`: guards state that only its owner may touch.
pub fn assert_on_shard(shard: usize) {
    assert_eq!(current_shard(), Some(shard), "state touched off its owning shard");
}

/// Per-shard context handed to the shard's main future.
#[derive(Clone)]
pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub mailboxes: Arc<Mailboxes>,
}

impl Shard {
    /// Runs `f` on shard `target` and returns its result to the caller's shard.
    pub async fn submit_to<F, Fut, R>(&self, target: usize, f: F) -> R
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = R> + 'static,
        R: Send + 'static,
    {
        self.mailboxes.call(self.id, target, f).await
    }

    /// Starts running what other shards submit to this one. A shard's `main` calls it once it is
    /// ready to run their calls (its state set up): calls submitted before wait in the mailbox —
    /// glommio runs a spawned task at once, so serving from the start would run them first.
    pub fn serve_mailbox(&self) {
        let (mailboxes, id) = (self.mailboxes.clone(), self.id);
        glommio::spawn_local(async move { mailboxes.serve(id).await }).detach();
    }
}

/// Where shards run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cores {
    /// Shard *i* and its blocking pool on core *i mod cores*: no migrations, warm caches.
    Pinned,
    /// Wherever the kernel puts them. For a host whose cores other processes keep busy too: a
    /// pinned shard on such a core gets its fair share of that core and no more, and waits for it on
    /// every wake-up, while a floating one moves to an idle core (Seastar's `--overprovisioned`).
    Floating,
}

/// Starts `count` shards, each running `main(shard)` (which calls `shard.serve_mailbox()` when it
/// is ready for other shards' calls), placed as `cores` says.
///
/// Returns a handle that waits for every shard's `main` to return.
pub fn start<F, Fut>(count: usize, cores: Cores, main: F) -> std::io::Result<Shards>
where
    F: Fn(Shard) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    assert!(count > 0, "at least one shard");
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mailboxes = Arc::new(Mailboxes::new(count));
    let threads: Arc<[priority::ShardThread]> = (0..count).map(|_| priority::ShardThread::default()).collect();
    let mut handles = Vec::with_capacity(count);
    for id in 0..count {
        let main = main.clone();
        let shard = Shard { id, count, mailboxes: mailboxes.clone() };
        let threads = threads.clone();
        let (placement, pool) = match cores {
            Cores::Pinned => (glommio::Placement::Fixed(id % online), blocking_pool(id % online)),
            Cores::Floating => (glommio::Placement::Unbound, glommio::PoolPlacement::Unbound(BLOCKING_THREADS)),
        };
        let handle = glommio::LocalExecutorBuilder::new(placement)
            .name(&format!("weir-shard-{id}"))
            .blocking_thread_pool_placement(pool)
            .spawn(move || async move {
                SHARD_ID.with(|s| s.set(Some(id)));
                priority::record(&threads, id);
                main(shard).await;
                threads[id].clear();
            })
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        handles.push(handle);
    }
    Ok(Shards { handles, mailboxes, threads })
}

/// Shares of a shard's CPU its background work gets when requests want it too (the requests' task
/// queue has glommio's default, 1000).
const BACKGROUND_SHARES: usize = 100;

thread_local! {
    static BACKGROUND: std::cell::Cell<Option<glommio::TaskQueueHandle>> = const { std::cell::Cell::new(None) };
}

/// Spawns background work (the log cleaner) on this shard, in a task queue of its own with a small
/// share of the CPU: when requests are waiting they run first, and the work takes what is left.
/// It should give way often (`yield_to_io`).
pub fn spawn_background<T: 'static>(fut: impl std::future::Future<Output = T> + 'static) -> Task<T> {
    let queue = BACKGROUND.with(|b| {
        b.get().unwrap_or_else(|| {
            let q = glommio::executor().create_task_queue(
                glommio::Shares::Static(BACKGROUND_SHARES),
                glommio::Latency::NotImportant,
                "background",
            );
            b.set(Some(q));
            q
        })
    });
    match glommio::spawn_local_into(fut, queue) {
        Ok(task) => task,
        Err(e) => unreachable!("the queue was created on this executor: {e}"),
    }
}

/// Lets the shard look for I/O completions (network reads among them) and run what they woke before
/// the caller goes on. A task that stays runnable (one that only yields) keeps the shard from polling
/// for up to glommio's preemption period, 100 ms: a background task always ready held requests back
/// that long. A shorter period for every task instead cost 9% more CPU on produce (100 B, measured).
pub async fn yield_to_io() {
    sleep(std::time::Duration::from_micros(1)).await;
}

/// Threads that run a shard's blocking calls (zero-copy sends). More than one, so that a send
/// waiting on a slow consumer does not hold up the others.
const BLOCKING_THREADS: usize = 4;

/// A pinned shard's blocking pool: on the shard's own core.
fn blocking_pool(core: usize) -> glommio::PoolPlacement {
    match glommio::CpuSet::online() {
        Ok(online) => glommio::PoolPlacement::Custom(vec![online.filter(|l| l.cpu == core); BLOCKING_THREADS]),
        Err(_) => glommio::PoolPlacement::Unbound(BLOCKING_THREADS),
    }
}

/// The running shards.
pub struct Shards {
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    mailboxes: Arc<Mailboxes>,
    threads: Arc<[priority::ShardThread]>,
}

impl Shards {
    /// The shards' mailboxes, for a thread outside them (the metrics listener) to hand them jobs.
    pub fn mailboxes(&self) -> Arc<Mailboxes> {
        self.mailboxes.clone()
    }

    /// Gives shards real-time priority while they use little of their core (see `priority`), until
    /// `stop` is set. An error if this process may not use real-time priorities.
    pub fn prioritize_light(&self, stop: &'static std::sync::atomic::AtomicBool) -> std::io::Result<()> {
        priority::watch(self.threads.clone(), stop)
    }

    /// Waits until every shard's main future has returned.
    pub fn join(self) {
        for (id, handle) in self.handles.into_iter().enumerate() {
            if let Err(e) = handle.join() {
                eprintln!("shard {id} ended with an error: {e:?}");
            }
        }
    }
}

/// Runs `fut` to completion on a fresh executor on the calling thread (tests, tools, benchmarks).
pub fn run_local<T>(fut: impl std::future::Future<Output = T>) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make().expect("local executor").run(fut)
}
