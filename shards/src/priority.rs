//! Real-time priority for shards that use little of their core.
//!
//! A shard on a core that another process keeps busy waits, at each wake-up, for that process's
//! time slice to end: with a busy loop on one of two cores, e2e p99 at 100k msgs/s was 4.6–4.9 ms,
//! and 0.6 ms with the shards' threads under SCHED_FIFO (perf/RESULTS.md, session 20). But a FIFO
//! thread with work keeps its core from every ordinary thread: a shard producing at full speed took
//! the CPU its own clients needed on the same host (−13% msgs/s). So a watcher thread gives a shard
//! SCHED_FIFO only while it is light — it used under `LIGHT` of a core in every tick of the last
//! `PROMOTE_AFTER` — and takes it back within a tick once it uses more than `HEAVY`: the wake-ups of a
//! light shard preempt other processes, a busy shard shares its core as any thread does, and a
//! runaway one cannot hold a core for longer than a tick.
//!
//! The shards' own children (io_uring's workers among them) start with ordinary priority
//! (SCHED_RESET_ON_FORK), so only threads the watcher measures are ever real-time.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(100);
/// A shard using less than this share of a core in a tick is light.
const LIGHT: f64 = 0.8;
/// A real-time shard using more than this share of a core in a tick loses its priority at once.
const HEAVY: f64 = 0.9;
/// How long a shard must stay light to be given real-time priority (again).
const PROMOTE_AFTER: Duration = Duration::from_secs(1);
/// The lowest real-time priorities: anything else real-time on the host (the kernel's own threads
/// among it) comes first. The watcher is above the shards so that it always gets to demote them.
const SHARD_PRIORITY: i32 = 1;
const WATCHER_PRIORITY: i32 = 2;

/// Each shard's thread as the watcher needs it: its id and its CPU clock. 0 until the shard runs.
#[derive(Default)]
pub(crate) struct ShardThread {
    tid: AtomicI32,
    clock: AtomicI32,
}

impl ShardThread {
    /// Records the calling thread: the shard's own.
    pub(crate) fn record(&self) {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self is always valid for the calling thread; clock is a valid out-pointer.
        if unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } != 0 {
            return;
        }
        self.clock.store(clock, Ordering::SeqCst);
        // SAFETY: gettid has no preconditions.
        self.tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
    }

    fn cpu_time(&self) -> Option<Duration> {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid out-pointer; a clock of a thread that ended gives EINVAL.
        let ok = unsafe { libc::clock_gettime(self.clock.load(Ordering::SeqCst), &mut ts) } == 0;
        ok.then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
}

/// Sets `tid`'s (0: the caller's) scheduling policy: SCHED_FIFO at `priority`, or ordinary with
/// `None`; children it starts from now on get ordinary priority.
fn set_policy(tid: libc::pid_t, priority: Option<i32>) -> io::Result<()> {
    let (policy, sched_priority) = match priority {
        Some(p) => (libc::SCHED_FIFO, p),
        None => (libc::SCHED_OTHER, 0),
    };
    let param = libc::sched_param { sched_priority };
    // SAFETY: param is a valid sched_param for the duration of the call.
    if unsafe { libc::sched_setscheduler(tid, policy | libc::SCHED_RESET_ON_FORK, &param) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What the watcher decides for one shard after a tick.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Promote,
    Demote,
    Keep,
}

/// One shard's standing: whether it is real-time, since when it has been light.
struct Standing {
    realtime: bool,
    light_since: Option<Instant>,
    cpu: Option<Duration>,
}

impl Standing {
    /// Updates the standing with the share of a core the shard used in the tick ending `now`.
    fn after_tick(&mut self, share: f64, now: Instant) -> Change {
        let light = share < LIGHT;
        if !light {
            self.light_since = None;
        } else if self.light_since.is_none() {
            self.light_since = Some(now);
        }
        if self.realtime && share > HEAVY {
            self.realtime = false;
            return Change::Demote;
        }
        let light_long = self.light_since.is_some_and(|t| now.duration_since(t) >= PROMOTE_AFTER);
        if !self.realtime && light_long {
            self.realtime = true;
            return Change::Promote;
        }
        Change::Keep
    }
}

/// Starts the watcher on a thread of its own; it stops when `stop` is set. An error if this process
/// may not use real-time priorities (it needs CAP_SYS_NICE or an RLIMIT_RTPRIO of 2): the shards
/// then keep ordinary priority.
pub(crate) fn watch(threads: Arc<[ShardThread]>, stop: &'static AtomicBool) -> io::Result<()> {
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new().name("weir-priority".into()).spawn(move || {
        let allowed = set_policy(0, Some(WATCHER_PRIORITY));
        let go_on = allowed.is_ok();
        let _ = started_tx.send(allowed);
        if go_on {
            run(&threads, stop);
        }
    })?;
    started_rx.recv().map_err(|_| io::Error::other("the priority watcher ended before it started"))?
}

fn run(threads: &[ShardThread], stop: &AtomicBool) {
    let mut standings: Vec<Standing> = threads.iter().map(|_| Standing { realtime: false, light_since: None, cpu: None }).collect();
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let wall = now.duration_since(last).as_secs_f64();
        last = now;
        for (thread, standing) in threads.iter().zip(&mut standings) {
            let tid = thread.tid.load(Ordering::SeqCst);
            let Some(cpu) = (tid != 0).then(|| thread.cpu_time()).flatten() else { continue };
            let Some(before) = standing.cpu.replace(cpu) else { continue };
            let share = cpu.saturating_sub(before).as_secs_f64() / wall;
            let priority = match standing.after_tick(share, now) {
                Change::Keep => continue,
                Change::Promote => Some(SHARD_PRIORITY),
                Change::Demote => None,
            };
            // The shard may have ended (the broker stopping); the next tick finds its clock gone.
            let _ = set_policy(tid, priority);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing() -> Standing {
        Standing { realtime: false, light_since: None, cpu: None }
    }

    #[test]
    fn a_shard_is_promoted_only_after_staying_light_and_demoted_in_the_tick_it_gets_heavy() {
        let (mut s, t0) = (standing(), Instant::now());
        let tick = |n: u32| t0 + TICK * n;
        for n in 0..10 {
            assert_eq!(s.after_tick(0.3, tick(n)), Change::Keep, "light for {n} ticks only");
        }
        assert_eq!(s.after_tick(0.3, tick(10)), Change::Promote);
        assert_eq!(s.after_tick(0.85, tick(11)), Change::Keep, "between LIGHT and HEAVY it keeps its priority");
        assert_eq!(s.after_tick(0.95, tick(12)), Change::Demote);
        // Light again, but the clock of lightness restarted when it got heavy.
        assert_eq!(s.after_tick(0.1, tick(13)), Change::Keep);
        assert_eq!(s.after_tick(0.1, tick(22)), Change::Keep);
        assert_eq!(s.after_tick(0.1, tick(23)), Change::Promote);
    }

    #[test]
    fn a_heavy_tick_restarts_the_wait_for_promotion() {
        let (mut s, t0) = (standing(), Instant::now());
        assert_eq!(s.after_tick(0.1, t0), Change::Keep);
        assert_eq!(s.after_tick(0.85, t0 + TICK * 5), Change::Keep);
        assert_eq!(s.after_tick(0.1, t0 + TICK * 6), Change::Keep);
        assert_eq!(s.after_tick(0.1, t0 + TICK * 15), Change::Keep);
        assert_eq!(s.after_tick(0.1, t0 + TICK * 16), Change::Promote);
    }

    fn policy(tid: libc::pid_t) -> libc::c_int {
        // SAFETY: no pointers; an ended thread gives -1.
        unsafe { libc::sched_getscheduler(tid) & !libc::SCHED_RESET_ON_FORK }
    }

    fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "{what} within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn an_idle_shard_is_made_realtime_and_loses_it_while_it_spins() {
        static STOP: AtomicBool = AtomicBool::new(false);
        static SPIN: AtomicBool = AtomicBool::new(false);
        static TID: AtomicI32 = AtomicI32::new(0);
        let shards = crate::start(1, crate::Cores::Floating, |_| async {
            // SAFETY: gettid has no preconditions.
            TID.store(unsafe { libc::gettid() }, Ordering::SeqCst);
            while !STOP.load(Ordering::SeqCst) {
                if SPIN.load(Ordering::SeqCst) {
                    // Never awaits: the shard's thread keeps its core for as long as it may.
                    std::hint::black_box(0u64);
                } else {
                    crate::sleep(Duration::from_millis(10)).await;
                }
            }
        })
        .expect("one shard");
        if let Err(e) = shards.prioritize_light(&STOP) {
            eprintln!("skipped: this process may not use real-time priorities ({e})");
            STOP.store(true, Ordering::SeqCst);
            shards.join();
            return;
        }
        wait_for("the shard running", Duration::from_secs(10), || TID.load(Ordering::SeqCst) != 0);
        let tid = TID.load(Ordering::SeqCst);
        wait_for("an idle shard made real-time", Duration::from_secs(10), || policy(tid) == libc::SCHED_FIFO);
        SPIN.store(true, Ordering::SeqCst);
        wait_for("a spinning shard made ordinary", Duration::from_secs(5), || policy(tid) == libc::SCHED_OTHER);
        STOP.store(true, Ordering::SeqCst);
        shards.join();
    }

    #[test]
    fn a_shards_cpu_clock_counts_its_work() {
        let thread = ShardThread::default();
        thread.record();
        let before = thread.cpu_time().expect("the caller's clock");
        let spin_until = Instant::now() + Duration::from_millis(20);
        while Instant::now() < spin_until {
            std::hint::black_box(0u64);
        }
        let used = thread.cpu_time().expect("the caller's clock").saturating_sub(before);
        assert!(used >= Duration::from_millis(10), "20 ms of spinning counted as {used:?}");
    }
}
