//! The shard's budget of files its logs hold open, and the cache it makes of them.
//!
//! Logs open their segments' files on use (`Log::files_of`) and close them when idle; this bounds
//! how many they hold at once, whatever the number of partitions in use. Before a log opens files,
//! `make_room` closes those of the least recently used other logs until the new ones fit: the files
//! are a cache, and a log whose files were closed opens them again on its next read or write, a
//! few system calls, with its state (offsets, indexes, cached batches) intact. The budget is the
//! shard's share of the process's descriptors less a reserve for connections (`broker::admission`).
//!
//! Shard-local, like everything a log touches: no locks, no atomics.

use super::log::Log;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

/// Logs being opened (recovered) at once on a shard, each with a file open meanwhile: a request
/// naming twenty thousand dormant partitions opens them this many at a time.
const OPENING_MAX: usize = 128;

thread_local! {
    static OPENING: Cell<usize> = const { Cell::new(0) };
    static OPENED: Rc<shards::Notify> = Rc::new(shards::Notify::default());
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
    static HELD: Cell<usize> = const { Cell::new(0) };
    /// Logs that opened files since they last let all of theirs go.
    static HOLDERS: RefCell<Vec<Weak<Log>>> = const { RefCell::new(Vec::new()) };
}

/// Sets this shard's budget of open log files.
pub fn set_limit(files: usize) {
    LIMIT.with(|l| l.set(files.max(1)));
}

/// Files this shard's logs hold open now.
pub fn held() -> usize {
    HELD.with(|h| h.get())
}

/// Counts `files` as held until dropped.
pub struct Held(usize);

pub fn hold(files: usize) -> Held {
    HELD.with(|h| h.set(h.get() + files));
    Held(files)
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(self.0)));
    }
}

/// Notes that `log` holds files, so that `make_room` may close them and the sweeper close them
/// once it is idle.
pub fn note_holder(log: &Weak<Log>) {
    start_sweeper();
    HOLDERS.with(|h| {
        let mut h = h.borrow_mut();
        if !h.iter().any(|w| w.ptr_eq(log)) {
            h.push(log.clone());
        }
    });
}

/// Notes that `log` holds no file any more.
pub fn forget_holder(log: &Weak<Log>) {
    HOLDERS.with(|h| h.borrow_mut().retain(|w| !w.ptr_eq(log)));
}

/// How often the shard looks for idle logs holding files.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts this shard's sweeper once: every `SWEEP_EVERY` it wakes the writers of logs that hold
/// files and have been idle long enough to let them go. One timer a shard, instead of one per
/// writer each time it waits.
fn start_sweeper() {
    thread_local! {
        static STARTED_ON: Cell<Option<usize>> = const { Cell::new(None) };
    }
    let executor = shards::executor_id();
    if STARTED_ON.with(|s| s.replace(Some(executor))) == Some(executor) {
        return;
    }
    shards::spawn_local(async {
        loop {
            shards::sleep(SWEEP_EVERY).await;
            let holders: Vec<Rc<Log>> = HOLDERS.with(|h| {
                let mut h = h.borrow_mut();
                h.retain(|w| w.strong_count() > 0);
                h.iter().filter_map(Weak::upgrade).collect()
            });
            for log in holders {
                log.wake_if_idle();
            }
        }
    })
    .detach();
}

/// Closes the files of the least recently used logs other than `except` until `files` more fit
/// the budget (or no other log holds any).
pub fn make_room(files: usize, except: Option<&Log>) {
    let fits = || held() + files <= LIMIT.with(|l| l.get());
    if fits() {
        return;
    }
    let mut holders: Vec<Rc<Log>> = HOLDERS.with(|h| {
        let mut h = h.borrow_mut();
        h.retain(|w| w.strong_count() > 0);
        h.iter().filter_map(Weak::upgrade).collect()
    });
    holders.retain(|log| except.is_none_or(|e| !std::ptr::eq(Rc::as_ptr(log), e)));
    holders.sort_by_key(|log| log.last_used());
    for log in holders {
        if fits() {
            break;
        }
        log.release_files();
    }
}

/// A turn to open a log, given back when dropped.
pub struct Opening(());

/// Waits for a turn to open a log (at most `OPENING_MAX` at once on this shard).
pub async fn opening() -> Opening {
    loop {
        if OPENING.with(|o| o.get()) < OPENING_MAX {
            OPENING.with(|o| o.set(o.get() + 1));
            return Opening(());
        }
        let opened = OPENED.with(Rc::clone);
        opened.notified().await;
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        OPENING.with(|o| o.set(o.get() - 1));
        OPENED.with(|n| n.notify_all());
    }
}
