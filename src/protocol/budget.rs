//! A shard's budget for request bytes in flight (`queued.max.request.bytes`, split over the shards).
//!
//! A connection reserves a frame's size once the size is known and before reading the rest of it; a
//! connection whose frame does not fit waits, reading nothing more, until earlier requests finish.
//! Frames that fit one read chunk (64 KiB) are not counted: they cost the connection's read buffer
//! only, and control requests must not queue behind large produces.
//! So the memory requests take is bounded by the budget, not by connections × `socket.request.max.bytes`.
//! A frame larger than the whole budget is still read, alone, so that no request size that passes
//! `socket.request.max.bytes` waits forever.

use std::cell::Cell;
use std::rc::Rc;

pub struct Budget {
    limit: usize,
    in_use: Cell<usize>,
    freed: shards::Notify,
}

/// Bytes held from a budget until dropped.
pub struct Reservation {
    budget: Rc<Budget>,
    bytes: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Rc<Budget> {
        Rc::new(Budget { limit, in_use: Cell::new(0), freed: shards::Notify::default() })
    }

    /// Would `reserve(bytes)` return at once?
    pub fn fits(&self, bytes: usize) -> bool {
        let in_use = self.in_use.get();
        in_use == 0 || in_use.saturating_add(bytes) <= self.limit
    }

    /// Waits until `bytes` fit the budget (or nothing else holds any), then holds them.
    pub async fn reserve(self: &Rc<Self>, bytes: usize) -> Reservation {
        loop {
            if self.fits(bytes) {
                let in_use = self.in_use.get();
                self.in_use.set(in_use + bytes);
                return Reservation { budget: self.clone(), bytes };
            }
            self.freed.notified().await;
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn in_use(&self) -> usize {
        self.in_use.get()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.in_use.set(self.budget.in_use.get() - self.bytes);
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_over_the_budget_waits_for_one_to_end() {
        shards::run_local(async {
            let budget = Budget::new(100);
            let first = budget.reserve(60).await;
            let b = budget.clone();
            let second = shards::spawn_local(async move { b.reserve(60).await });
            for _ in 0..10 {
                futures_lite::future::yield_now().await;
            }
            assert_eq!(budget.in_use(), 60, "the second waits while the first holds its bytes");
            drop(first);
            let second = second.await;
            assert_eq!(budget.in_use(), 60);
            drop(second);
            // Larger than the whole budget: served when nothing else is.
            let huge = budget.reserve(1000).await;
            assert_eq!(budget.in_use(), 1000);
            drop(huge);
            assert_eq!(budget.in_use(), 0);
        });
    }
}
