//! A single-shard broadcast notification: tasks wait for "something changed", a notifier wakes them all.
//!
//! Used for "a batch was appended" (long-poll fetches) and "the durable offset moved" (acks=all).
//! Not `Send`: it lives and dies on one shard.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    /// Wakes every task waiting now. Tasks that start waiting later wait for the next call.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Completes at the next `notify_all`.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self, generation: self.generation.get() }
    }
}

pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut waiters = self.notify.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// One task at a time through a section that awaits (an async mutex holding no data), on one shard.
#[derive(Default)]
pub struct Turn {
    busy: Cell<bool>,
    freed: Notify,
}

/// Held while it is the holder's turn; the next waiter goes when it is dropped.
pub struct TurnHeld<'a>(&'a Turn);

impl Turn {
    pub async fn take(&self) -> TurnHeld<'_> {
        while self.busy.get() {
            self.freed.notified().await;
        }
        self.busy.set(true);
        TurnHeld(self)
    }
}

impl Drop for TurnHeld<'_> {
    fn drop(&mut self) {
        self.0.busy.set(false);
        self.0.freed.notify_all();
    }
}
