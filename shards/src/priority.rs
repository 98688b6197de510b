//! Real-time priority for shards that use little of their core (`--realtime-shards`).
//!
//! A shard on a core that another process keeps busy waits, at each wake-up, for that process's
//! time slice to end: with a busy loop on one of two cores, e2e p99 at 100k msgs/s was 4.6–4.9 ms,
//! and 0.6 ms with the shards' threads under SCHED_FIFO (perf/RESULTS.md, session 20). But a FIFO
//! thread with work keeps its core from every ordinary thread, so a watcher thread gives a shard
//! SCHED_FIFO only while it is light — it used under `LIGHT` of a core in every tick of the last
//! `PROMOTE_AFTER` — and takes it back within a tick once it uses more than `HEAVY`: the wake-ups of a
//! light shard preempt other processes, a busy shard shares its core as any thread does, and a
//! runaway one cannot hold a core for longer than a tick.
//!
//! Off unless asked for: a shard can be light and still cost a client on its own core dearly — at
//! 55–75% of its core it preempts a co-located producer at each small request, and that producer
//! sent 40–67% fewer records — and CPU use alone cannot tell such a client from an unrelated hog.
//!
//! The shards' own children (io_uring's workers among them) start with ordinary priority
//! (SCHED_RESET_ON_FORK), so only threads the watcher measures are ever real-time.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(100);
/// A shard using less than this share of a core in a tick is light.
const LIGHT: f64 = 0.8;
/// A real-time shard using more than this share of a core in a tick loses its priority at once.
const HEAVY: f64 = 0.9;
/// A shard that used more than this share of a tick without leaving its CPU (at most `SPIN_RUNS`
/// times on it) is spinning — a share short of `HEAVY` only because the hypervisor took the vCPU
/// (steal time is not the thread's) or interrupts did — and loses its priority too. A light shard
/// sleeps and wakes thousands of times a tick.
const SPIN_SHARE: f64 = 0.25;
const SPIN_RUNS: u64 = 2;
/// How long a shard must stay light to be given real-time priority (again).
const PROMOTE_AFTER: Duration = Duration::from_secs(1);
/// The lowest real-time priorities: anything else real-time on the host (the kernel's own threads
/// among it) comes first. The watcher is above the shards so that it always gets to demote them.
const SHARD_PRIORITY: i32 = 1;
const WATCHER_PRIORITY: i32 = 2;

/// Each shard's thread id, 0 while the shard does not run, and how often it lost real-time priority.
#[derive(Default)]
pub(crate) struct ShardThread {
    tid: AtomicI32,
    demotions: AtomicU64,
}

thread_local! {
    /// On a shard's thread: its entry among the watcher's.
    static OWN: std::cell::RefCell<Option<(Arc<[ShardThread]>, usize)>> = const { std::cell::RefCell::new(None) };
}

/// Whether the calling thread runs at real-time priority now.
pub fn realtime() -> bool {
    // SAFETY: no pointers; 0 is the calling thread.
    unsafe { libc::sched_getscheduler(0) & !libc::SCHED_RESET_ON_FORK == libc::SCHED_FIFO }
}

/// How often the calling shard lost real-time priority for using much of its core (0 off a shard).
pub fn demotions() -> u64 {
    OWN.with(|own| own.borrow().as_ref().map_or(0, |(threads, id)| threads[*id].demotions.load(Ordering::Relaxed)))
}

/// Records the calling thread as shard `id`'s.
pub(crate) fn record(threads: &Arc<[ShardThread]>, id: usize) {
    // SAFETY: gettid has no preconditions.
    threads[id].tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
    OWN.with(|own| *own.borrow_mut() = Some((threads.clone(), id)));
}

impl ShardThread {
    /// The shard has ended: its thread id may go to another thread.
    pub(crate) fn clear(&self) {
        self.tid.store(0, Ordering::SeqCst);
    }
}

/// What the scheduler counted for a thread: time on a CPU and how many times it was put on one.
#[derive(Clone, Copy, Debug, PartialEq)]
struct SchedStat {
    runtime: Duration,
    runs: u64,
}

impl SchedStat {
    /// `tid`'s (a thread of this process) counts; `None` once it has ended.
    fn read(tid: libc::pid_t) -> Option<SchedStat> {
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        let runtime = fields.next()??;
        let runs = fields.nth(1)??;
        Some(SchedStat { runtime: Duration::from_nanos(runtime), runs })
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

/// What a shard did in one tick.
#[derive(Clone, Copy, Debug)]
struct Tick {
    /// The share of a core it used.
    share: f64,
    /// How many times it was put on a CPU.
    runs: u64,
}

impl Tick {
    fn spinning(&self) -> bool {
        self.share > SPIN_SHARE && self.runs <= SPIN_RUNS
    }
}

/// What the watcher decides for one shard after a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Promote,
    Demote,
    Keep,
}

/// One shard's standing: whether it is real-time, since when it has been light.
#[derive(Default)]
struct Standing {
    realtime: bool,
    light_since: Option<Instant>,
    last: Option<SchedStat>,
}

impl Standing {
    /// What should change after the tick ending `now` (`changed` records that it did).
    fn after_tick(&mut self, tick: Tick, now: Instant) -> Change {
        let light = tick.share < LIGHT && !tick.spinning();
        if !light {
            self.light_since = None;
        } else if self.light_since.is_none() {
            self.light_since = Some(now);
        }
        if self.realtime && (tick.share > HEAVY || tick.spinning()) {
            return Change::Demote;
        }
        let light_long = self.light_since.is_some_and(|t| now.duration_since(t) >= PROMOTE_AFTER);
        if !self.realtime && light_long {
            return Change::Promote;
        }
        Change::Keep
    }

    fn changed(&mut self, change: Change) {
        match change {
            Change::Promote => self.realtime = true,
            Change::Demote => self.realtime = false,
            Change::Keep => {}
        }
    }
}

/// Why this process should keep ordinary priority, if it should: real-time threads escape a CPU
/// limit (cgroup v2's cpu.max bounds ordinary threads only), and RLIMIT_RTTIME kills a real-time
/// thread that runs past it without sleeping.
fn reason_to_stay_ordinary() -> Option<String> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: limit is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_RTTIME, &mut limit) } == 0 && limit.rlim_cur != libc::RLIM_INFINITY {
        return Some(format!("RLIMIT_RTTIME is {} µs: a busy real-time shard would be killed", limit.rlim_cur));
    }
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mut dir = std::path::PathBuf::from("/sys/fs/cgroup");
    for part in path.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        let max = std::fs::read_to_string(dir.join("cpu.max")).unwrap_or_default();
        if max.split_whitespace().next().is_some_and(|quota| quota != "max") {
            return Some(format!("{} limits the CPU (cpu.max {}), and real-time threads would escape it", dir.display(), max.trim()));
        }
    }
    None
}

/// Starts the watcher on a thread of its own; it stops when `stop` is set. An error says why the
/// shards keep ordinary priority instead.
pub(crate) fn watch(threads: Arc<[ShardThread]>, stop: &'static AtomicBool) -> io::Result<()> {
    if let Some(why) = reason_to_stay_ordinary() {
        return Err(io::Error::other(why));
    }
    // SAFETY: gettid has no preconditions.
    if SchedStat::read(unsafe { libc::gettid() }).is_none() {
        return Err(io::Error::other("the kernel keeps no per-thread schedstat to measure shards by"));
    }
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new().name("weir-priority".into()).spawn(move || {
        let allowed = set_policy(0, Some(WATCHER_PRIORITY));
        let go_on = allowed.is_ok();
        let _ = started_tx.send(allowed);
        if go_on {
            run(&threads, stop);
        }
    })?;
    match started_rx.recv() {
        Ok(Err(e)) if e.raw_os_error() == Some(libc::EPERM) => Err(io::Error::other(
            "real-time priority not permitted: it needs root or CAP_SYS_NICE (or RLIMIT_RTPRIO >= 2), and an RT budget in the cgroup under RT group scheduling",
        )),
        Ok(started) => started,
        Err(_) => Err(io::Error::other("the priority watcher ended before it started")),
    }
}

fn run(threads: &[ShardThread], stop: &AtomicBool) {
    let mut standings: Vec<Standing> = threads.iter().map(|_| Standing::default()).collect();
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let wall = now.duration_since(last).as_secs_f64();
        last = now;
        for (thread, standing) in threads.iter().zip(&mut standings) {
            let tid = thread.tid.load(Ordering::SeqCst);
            let Some(stat) = (tid != 0).then(|| SchedStat::read(tid)).flatten() else { continue };
            let Some(before) = standing.last.replace(stat) else { continue };
            let share = stat.runtime.saturating_sub(before.runtime).as_secs_f64() / wall;
            let change = standing.after_tick(Tick { share, runs: stat.runs.saturating_sub(before.runs) }, now);
            let priority = match change {
                Change::Keep => continue,
                Change::Promote => Some(SHARD_PRIORITY),
                Change::Demote => None,
            };
            // The shard may have ended (the broker stopping): its standing stays, and its thread
            // id is cleared before another thread can have it.
            if set_policy(tid, priority).is_ok() {
                standing.changed(change);
                if change == Change::Demote {
                    thread.demotions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tick of a shard that slept and woke often.
    fn used(share: f64) -> Tick {
        Tick { share, runs: 1000 }
    }

    /// Runs the tick through the standing as the watcher does, every change taking effect.
    fn tick(s: &mut Standing, t: Tick, at: Instant) -> Change {
        let change = s.after_tick(t, at);
        s.changed(change);
        change
    }

    #[test]
    fn a_shard_is_promoted_only_after_staying_light_and_demoted_in_the_tick_it_gets_heavy() {
        let (mut s, t0) = (Standing::default(), Instant::now());
        let at = |n: u32| t0 + TICK * n;
        for n in 0..10 {
            assert_eq!(tick(&mut s, used(0.3), at(n)), Change::Keep, "light for {n} ticks only");
        }
        assert_eq!(tick(&mut s, used(0.3), at(10)), Change::Promote);
        assert_eq!(tick(&mut s, used(0.85), at(11)), Change::Keep, "between LIGHT and HEAVY it keeps its priority");
        assert_eq!(tick(&mut s, used(0.95), at(12)), Change::Demote);
        // Light again, but the clock of lightness restarted when it got heavy.
        assert_eq!(tick(&mut s, used(0.1), at(13)), Change::Keep);
        assert_eq!(tick(&mut s, used(0.1), at(22)), Change::Keep);
        assert_eq!(tick(&mut s, used(0.1), at(23)), Change::Promote);
    }

    #[test]
    fn a_heavy_tick_restarts_the_wait_for_promotion() {
        let (mut s, t0) = (Standing::default(), Instant::now());
        assert_eq!(tick(&mut s, used(0.1), t0), Change::Keep);
        assert_eq!(tick(&mut s, used(0.85), t0 + TICK * 5), Change::Keep);
        assert_eq!(tick(&mut s, used(0.1), t0 + TICK * 6), Change::Keep);
        assert_eq!(tick(&mut s, used(0.1), t0 + TICK * 15), Change::Keep);
        assert_eq!(tick(&mut s, used(0.1), t0 + TICK * 16), Change::Promote);
    }

    #[test]
    fn a_shard_that_never_left_its_cpu_is_spinning_whatever_share_the_clock_shows() {
        let (mut s, t0) = (Standing::default(), Instant::now());
        assert_eq!(tick(&mut s, used(0.0), t0), Change::Keep);
        assert_eq!(tick(&mut s, Tick { share: 0.0, runs: 0 }, t0 + TICK * 5), Change::Keep, "idle: asleep all tick");
        assert_eq!(tick(&mut s, used(0.0), t0 + TICK * 10), Change::Promote);
        // 60% of the tick on its CPU, put on it once: the rest went to the hypervisor, not to sleep.
        assert_eq!(tick(&mut s, Tick { share: 0.6, runs: 1 }, t0 + TICK * 11), Change::Demote);
        assert_eq!(tick(&mut s, Tick { share: 0.6, runs: 2 }, t0 + TICK * 12), Change::Keep);
        assert_eq!(tick(&mut s, used(0.6), t0 + TICK * 22), Change::Keep, "not light for a second yet");
    }

    #[test]
    fn a_failed_change_leaves_the_standing_as_it_was() {
        let (mut s, t0) = (Standing::default(), Instant::now());
        assert_eq!(s.after_tick(used(0.1), t0), Change::Keep);
        // The promotion was not made (no call succeeded): asked again on the next tick.
        assert_eq!(s.after_tick(used(0.1), t0 + TICK * 10), Change::Promote);
        assert_eq!(s.after_tick(used(0.1), t0 + TICK * 11), Change::Promote);
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

    /// Needs a process that may use real-time priorities (root, as CI runs); says so and passes
    /// otherwise.
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
            eprintln!("skipped: shards keep ordinary priority here ({e})");
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
    fn a_threads_schedstat_counts_its_work() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let before = SchedStat::read(tid).expect("this thread's schedstat");
        let deadline = Instant::now() + Duration::from_secs(30);
        while SchedStat::read(tid).expect("this thread's schedstat").runtime < before.runtime + Duration::from_millis(10) {
            assert!(Instant::now() < deadline, "30 s of spinning did not count 10 ms of CPU");
            std::hint::black_box(0u64);
        }
    }
}
