//! Incremental fetch sessions (KIP-227), with the rules of Kafka's `FetchSession`: a consumer of many
//! partitions names them once, then sends only what changed (new positions, partitions added or
//! forgotten) and hears back only about partitions with records, a moved high watermark or log start,
//! or an error.
//!
//! Sessions belong to the shard (broker) that answered the fetch that created them; a bounded number
//! (`max.incremental.fetch.session.cache.slots`) per shard. When all slots are taken, the least
//! recently used session idle for longer than `EVICTION_IDLE` makes room; if none has, the fetch is
//! answered without a session (session id 0), as Kafka does, and the client stays sessionless.
//!
//! Request (v7+) by `session_id` / `session_epoch`:
//! - epoch −1: no session; a non-zero id closes that one. Every requested partition is answered.
//! - epoch 0: a full fetch that opens a new session (replacing the id given, if any).
//! - epoch > 0: an incremental fetch of session `id`, which must exist (else FETCH_SESSION_ID_NOT_FOUND)
//!   and expect this epoch (else INVALID_FETCH_SESSION_EPOCH).

use super::errors;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kafka's `min.incremental.fetch.session.eviction.ms`: a session idle this long may be evicted to
/// make room for a new one.
const EVICTION_IDLE: Duration = Duration::from_secs(120);

/// Partitions kept in all of a shard's sessions together (about 100 bytes each): a client names
/// as many as its requests hold, so the slots alone would not bound the memory. A session that
/// would pass it is not opened, or is closed (FETCH_SESSION_ID_NOT_FOUND: the client starts over
/// with full fetches).
const SESSION_PARTITIONS_MAX: usize = 1_000_000;

/// A partition to read, as requested or as kept in a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// Empty for a topic id this broker does not know (Fetch v13+). Shared by the topic's
    /// partitions: a request naming one long name for many partitions holds it once.
    pub topic: Arc<str>,
    pub topic_id: u128,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
}

/// What a partition's answer said, for deciding whether an incremental response must carry it.
pub struct Answered {
    pub error: i16,
    pub high_watermark: i64,
    pub log_start: i64,
    pub has_records: bool,
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    topic_id: u128,
    offset: i64,
    max_bytes: usize,
    /// As last sent to the client; −1: must be sent.
    high_watermark: i64,
    log_start: i64,
    /// Its place in the session's order of reading: a partition that returned records goes to the
    /// back (Kafka's FetchSession), so that under a response size limit every partition gets turns.
    turn: u64,
}

impl Cached {
    /// Remembers an answer; true if it has news for the client (Kafka's `maybeUpdateResponseData`).
    fn note(&mut self, a: &Answered) -> bool {
        let news = a.has_records || a.high_watermark != self.high_watermark || a.log_start != self.log_start;
        self.high_watermark = a.high_watermark;
        self.log_start = a.log_start;
        if a.error != errors::NONE {
            // Sent again once the error is gone.
            self.high_watermark = -1;
            return true;
        }
        news
    }
}

struct Session {
    /// The epoch the next incremental request must carry.
    epoch: i32,
    partitions: BTreeMap<(Arc<str>, i32), Cached>,
    /// The turn the next partition sent to the back gets.
    next_turn: u64,
    last_used: Instant,
}

/// How a fetch is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Every requested partition; `session` is the id of the session it opened (0: none).
    Full { session: i32 },
    /// Only the session's partitions with news.
    Incremental { session: i32 },
    /// A top-level error and no partitions.
    Error(i16),
}

impl Context {
    pub fn session_id(self) -> i32 {
        match self {
            Context::Full { session } | Context::Incremental { session } => session,
            Context::Error(_) => 0,
        }
    }
}

pub struct Sessions {
    by_id: HashMap<i32, Session>,
    slots: usize,
    next_id: i32,
    /// Partitions in all sessions, at most `partitions_max`.
    partitions: usize,
    partitions_max: usize,
}

impl Sessions {
    pub fn new(slots: usize, seed: i32) -> Self {
        Sessions { by_id: HashMap::new(), slots, next_id: seed.max(1), partitions: 0, partitions_max: SESSION_PARTITIONS_MAX }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Decides how a fetch is answered, updates its session, and returns what to read.
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        requested: Vec<Wanted>,
        forgotten: &[(Arc<str>, i32)],
        now: Instant,
    ) -> (Context, Vec<Wanted>) {
        match epoch {
            -1 => {
                self.close(session_id);
                (Context::Full { session: 0 }, requested)
            }
            0 => {
                self.close(session_id);
                let session = self.open(&requested, now);
                (Context::Full { session }, requested)
            }
            _ => {
                let Some(s) = self.by_id.get_mut(&session_id) else {
                    return (Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND), Vec::new());
                };
                if s.epoch != epoch {
                    return (Context::Error(errors::INVALID_FETCH_SESSION_EPOCH), Vec::new());
                }
                let before = s.partitions.len();
                if self.partitions + requested.len() > self.partitions_max {
                    self.close(session_id);
                    return (Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND), Vec::new());
                }
                for w in requested {
                    let c = s.partitions.entry((w.topic, w.partition)).or_insert_with(|| {
                        s.next_turn += 1;
                        Cached {
                            topic_id: w.topic_id,
                            offset: w.offset,
                            max_bytes: w.max_bytes,
                            high_watermark: -1,
                            log_start: -1,
                            turn: s.next_turn,
                        }
                    });
                    c.offset = w.offset;
                    c.max_bytes = w.max_bytes;
                }
                for tp in forgotten {
                    s.partitions.remove(tp);
                }
                s.epoch = next_epoch(s.epoch);
                s.last_used = now;
                self.partitions = self.partitions + s.partitions.len() - before;
                let mut in_turn: Vec<_> = s.partitions.iter().collect();
                in_turn.sort_unstable_by_key(|(_, c)| c.turn);
                let wanted = in_turn
                    .into_iter()
                    .map(|((topic, partition), c)| Wanted {
                        topic: topic.clone(),
                        topic_id: c.topic_id,
                        partition: *partition,
                        offset: c.offset,
                        max_bytes: c.max_bytes,
                    })
                    .collect();
                (Context::Incremental { session: session_id }, wanted)
            }
        }
    }

    /// A new session of `requested`, if a slot is free or can be freed; its id, else 0.
    fn open(&mut self, requested: &[Wanted], now: Instant) -> i32 {
        if self.slots == 0 || self.partitions + requested.len() > self.partitions_max {
            return 0;
        }
        if self.by_id.len() >= self.slots {
            let idle = self.by_id.iter().filter(|(_, s)| now.duration_since(s.last_used) >= EVICTION_IDLE).min_by_key(|(_, s)| s.last_used);
            match idle.map(|(id, _)| *id) {
                Some(id) => self.close(id),
                None => return 0,
            }
        }
        let id = self.fresh_id();
        let partitions = requested
            .iter()
            .zip(0..)
            .map(|(w, turn)| {
                (
                    (w.topic.clone(), w.partition),
                    Cached { topic_id: w.topic_id, offset: w.offset, max_bytes: w.max_bytes, high_watermark: -1, log_start: -1, turn },
                )
            })
            .collect();
        let session = Session { epoch: 1, partitions, next_turn: requested.len() as u64, last_used: now };
        self.partitions += session.partitions.len();
        self.by_id.insert(id, session);
        id
    }

    fn close(&mut self, id: i32) {
        if let Some(s) = self.by_id.remove(&id) {
            self.partitions -= s.partitions.len();
        }
    }

    fn fresh_id(&mut self) -> i32 {
        loop {
            // A multiplicative step through the positive ids: hard to guess, never 0, rarely reused.
            let id = self.next_id;
            self.next_id = (self.next_id as u32).wrapping_mul(1_103_515_245).wrapping_add(12_345) as i32 & i32::MAX;
            if id > 0 && !self.by_id.contains_key(&id) {
                return id;
            }
        }
    }

    /// After the reads: remembers what was answered, and says which of `answers` (in the order of
    /// the wanted partitions) the response carries.
    pub fn finish(&mut self, ctx: Context, wanted: &[Wanted], answers: &[Answered]) -> Vec<bool> {
        let (session, incremental) = match ctx {
            Context::Full { session } => (session, false),
            Context::Incremental { session } => (session, true),
            Context::Error(_) => return vec![false; answers.len()],
        };
        let Some(s) = self.by_id.get_mut(&session) else {
            return vec![true; answers.len()];
        };
        if incremental {
            // By name, not by position: another connection may have changed the session meanwhile.
            return wanted
                .iter()
                .zip(answers)
                .map(|(w, a)| match s.partitions.get_mut(&(w.topic.clone(), w.partition)) {
                    Some(c) => {
                        if a.has_records {
                            s.next_turn += 1;
                            c.turn = s.next_turn;
                        }
                        c.note(a)
                    }
                    None => true,
                })
                .collect();
        }
        for (w, a) in wanted.iter().zip(answers) {
            if let Some(c) = s.partitions.get_mut(&(w.topic.clone(), w.partition)) {
                c.note(a);
            }
        }
        vec![true; answers.len()]
    }
}

/// Kafka's `nextEpoch`: 1 follows `i32::MAX`.
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(p: i32, offset: i64) -> Wanted {
        Wanted { topic: "t".into(), topic_id: 9, partition: p, offset, max_bytes: 1000 }
    }

    fn answer(hw: i64, records: bool) -> Answered {
        Answered { error: errors::NONE, high_watermark: hw, log_start: 0, has_records: records }
    }

    #[test]
    fn a_session_answers_only_what_changed() {
        let now = Instant::now();
        let mut s = Sessions::new(10, 7);
        let requested: Vec<Wanted> = (0..100).map(|p| want(p, 0)).collect();
        let (ctx, wanted) = s.begin(0, 0, requested, &[], now);
        let Context::Full { session } = ctx else { panic!("{ctx:?}") };
        assert!(session > 0);
        assert_eq!(wanted.len(), 100);
        let answers: Vec<Answered> = (0..100).map(|_| answer(5, false)).collect();
        assert!(s.finish(ctx, &wanted, &answers).iter().all(|x| *x), "a full fetch answers everything");
        // Next: the client names nothing; the session reads all 100 and answers only partition 3.
        let (ctx, wanted) = s.begin(session, 1, vec![], &[], now);
        assert_eq!(ctx, Context::Incremental { session });
        assert_eq!(wanted.len(), 100);
        let answers: Vec<Answered> = (0..100).map(|p| answer(if p == 3 { 6 } else { 5 }, p == 3)).collect();
        let sent = s.finish(ctx, &wanted, &answers);
        assert_eq!(sent.iter().filter(|x| **x).count(), 1);
        assert!(sent[3]);
        // A new position for partition 3, partition 4 forgotten.
        let (_, wanted) = s.begin(session, 2, vec![want(3, 6)], &[("t".into(), 4)], now);
        assert_eq!(wanted.len(), 99);
        assert_eq!(wanted.iter().find(|w| w.partition == 3).unwrap().offset, 6);
    }

    #[test]
    fn a_partition_that_returned_records_goes_to_the_back_of_the_session() {
        let now = Instant::now();
        let mut s = Sessions::new(10, 7);
        let (ctx, wanted) = s.begin(0, 0, (0..3).map(|p| want(p, 0)).collect(), &[], now);
        s.finish(ctx, &wanted, &[answer(5, true), answer(5, true), answer(5, true)]);
        let session = ctx.session_id();
        let order = |w: &[Wanted]| w.iter().map(|w| w.partition).collect::<Vec<_>>();
        let (ctx, wanted) = s.begin(session, 1, vec![], &[], now);
        assert_eq!(order(&wanted), [0, 1, 2], "the full fetch's order");
        // Under a size limit only partition 0 returned records: 1 and 2 come first next time.
        s.finish(ctx, &wanted, &[answer(6, true), answer(6, false), answer(6, false)]);
        let (ctx, wanted) = s.begin(session, 2, vec![want(7, 0)], &[], now);
        assert_eq!(order(&wanted), [1, 2, 0, 7]);
        s.finish(ctx, &wanted, &[answer(7, true), answer(6, false), answer(7, false), answer(1, false)]);
        let (_, wanted) = s.begin(session, 3, vec![], &[], now);
        assert_eq!(order(&wanted), [2, 0, 7, 1]);
    }

    #[test]
    fn wrong_ids_and_epochs_are_errors_and_epoch_minus_one_closes() {
        let now = Instant::now();
        let mut s = Sessions::new(10, 7);
        let (ctx, _) = s.begin(0, 0, vec![want(0, 0)], &[], now);
        let id = ctx.session_id();
        assert_eq!(s.begin(id + 1, 1, vec![], &[], now).0, Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND));
        assert_eq!(s.begin(id, 5, vec![], &[], now).0, Context::Error(errors::INVALID_FETCH_SESSION_EPOCH));
        assert_eq!(s.begin(id, -1, vec![want(0, 0)], &[], now).0, Context::Full { session: 0 });
        assert!(s.is_empty(), "epoch -1 closed it");
    }

    #[test]
    fn partitions_in_sessions_are_bounded() {
        let now = Instant::now();
        let mut s = Sessions::new(10, 7);
        s.partitions_max = 5;
        let a = s.begin(0, 0, (0..3).map(|p| want(p, 0)).collect(), &[], now).0.session_id();
        assert!(a > 0);
        assert_eq!(s.begin(0, 0, (0..3).map(|p| want(p, 0)).collect(), &[], now).0, Context::Full { session: 0 }, "3 + 3 > 5");
        let (ctx, _) = s.begin(a, 1, vec![want(3, 0)], &[], now);
        assert_eq!(ctx, Context::Incremental { session: a }, "4 fit");
        let (ctx, _) = s.begin(a, 2, vec![want(4, 0), want(5, 0)], &[], now);
        assert_eq!(ctx, Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND), "6 would not: the session closes");
        assert!(s.is_empty());
        assert!(s.begin(0, 0, (0..5).map(|p| want(p, 0)).collect(), &[], now).0.session_id() > 0, "its room is free again");
    }

    #[test]
    fn slots_are_bounded_and_only_idle_sessions_are_evicted() {
        let now = Instant::now();
        let mut s = Sessions::new(2, 7);
        let a = s.begin(0, 0, vec![want(0, 0)], &[], now).0.session_id();
        let b = s.begin(0, 0, vec![want(0, 0)], &[], now).0.session_id();
        assert!(a > 0 && b > 0 && a != b);
        assert_eq!(s.begin(0, 0, vec![want(0, 0)], &[], now).0, Context::Full { session: 0 }, "full, nobody idle");
        let later = now + EVICTION_IDLE;
        s.begin(b, 1, vec![], &[], later);
        let c = s.begin(0, 0, vec![want(0, 0)], &[], later).0.session_id();
        assert!(c > 0);
        assert_eq!(s.len(), 2);
        assert_eq!(s.begin(a, 1, vec![], &[], later).0, Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND), "the idle one went");
    }
}
