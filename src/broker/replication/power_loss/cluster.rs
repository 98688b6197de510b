//! The harness's cluster: two replicas, their disks and roles, and the controller's record, moved
//! by the protocol's own steps (`super`).

use super::{check_leader, trace, Model, Totals};
use crate::broker::catalog::PartitionState;
use crate::broker::partitions::Cut;
use crate::broker::replication::election::{self, Event};
use crate::broker::replication::follower;
use crate::broker::replication::leader::{self, FollowerFetch, Leader, Refused};
use crate::storage::{truncate, Log, LogConfig};
use shards::fs::{Rng, SimDisk};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

pub(super) const REPLICAS: [u16; 2] = [0, 1];

pub(super) enum Role {
    Leader(Rc<Leader>),
    /// Following in `epoch`; `reconciled` once its copy was cut to a prefix of the leader's log.
    Follower {
        epoch: i32,
        reconciled: bool,
    },
}

pub(super) struct Replica {
    pub(super) disk: Rc<SimDisk>,
    pub(super) dir: PathBuf,
    /// `None` while the replica is down.
    pub(super) log: Option<Rc<Log>>,
    pub(super) role: Option<Role>,
}

pub(super) struct Cluster {
    pub(super) replicas: Vec<Replica>,
    /// What the controller records.
    pub(super) st: PartitionState,
    pub(super) cfg: LogConfig,
    pub(super) min_isr: usize,
}

impl Replica {
    /// The replica's process dies now: its log is stopped, and its disk loses what was not
    /// fsynced as `power_loss` (a seed) decides, or keeps it (a kill).
    async fn die(&mut self, power_loss: Option<u64>, totals: &mut Totals) {
        self.disk.crash_after(1);
        if let Some(log) = self.log.take() {
            let _ = log.close().await;
        }
        self.role = None;
        match power_loss {
            Some(seed) => {
                self.disk.crash(seed);
                totals.power_losses += 1;
            }
            None => self.disk.kill(),
        }
    }
}

impl Cluster {
    pub(super) fn up(&self, r: usize) -> Option<&Rc<Log>> {
        self.replicas[r].log.as_ref()
    }

    /// The replica leading now, its log and its leader state, if it is up and knows it leads.
    pub(super) fn leader(&self) -> Option<(usize, Rc<Log>, Rc<Leader>)> {
        let r = usize::from(self.st.leader?);
        match (&self.replicas[r].log, &self.replicas[r].role) {
            (Some(log), Some(Role::Leader(l))) => Some((r, log.clone(), l.clone())),
            _ => None,
        }
    }

    /// Brings every replica that is up to the role the controller records (as `replication::apply`).
    pub(super) async fn apply(&mut self, model: &mut Model, totals: &mut Totals) -> Result<(), String> {
        for r in 0..self.replicas.len() {
            let Some(log) = self.replicas[r].log.clone() else { continue };
            if self.st.leader == Some(r as u16) {
                if let Some(Role::Leader(l)) = &self.replicas[r].role {
                    if l.epoch == self.st.epoch {
                        l.refresh(&log, self.min_isr, self.st.isr.clone());
                        continue;
                    }
                }
                let l = Rc::new(Leader::new(r as u16, self.st.epoch, REPLICAS.to_vec(), self.st.isr.clone()));
                l.start(&log, self.min_isr);
                trace(|| format!("replica {r} leads in epoch {}: {:?} {:?}", self.st.epoch, log.replica_end(), log.offsets()));
                self.replicas[r].role = Some(Role::Leader(l));
                totals.new_leaders += 1;
                match check_leader(&log, model).await {
                    Err(_) if self.replicas[r].disk.is_down() => {}
                    Err(e) => return Err(format!("replica {r} leading in epoch {}: {e}", self.st.epoch)),
                    Ok(()) => {}
                }
            } else {
                let same = matches!(self.replicas[r].role, Some(Role::Follower { epoch, .. }) if epoch == self.st.epoch);
                if !same {
                    log.follow();
                    trace(|| format!("replica {r} follows in epoch {}: {:?} {:?}", self.st.epoch, log.replica_end(), log.offsets()));
                    self.replicas[r].role = Some(Role::Follower { epoch: self.st.epoch, reconciled: false });
                }
            }
        }
        // Produces on a replica that no longer leads in their epoch were answered with an error.
        let leading = self.leader().map(|(r, _, l)| (r, l.epoch));
        model.pending.retain(|p| leading == Some((p.replica, p.epoch)));
        Ok(())
    }

    /// Replica `r`'s disk died: its log is closed, the disk loses what it had not fsynced (a power
    /// loss) or keeps it (the process was killed), and the controller hears the replica failed.
    pub(super) async fn down(
        &mut self,
        r: usize,
        power_loss: bool,
        seed: u64,
        model: &mut Model,
        totals: &mut Totals,
    ) -> Result<(), String> {
        self.replicas[r].die(power_loss.then_some(seed), totals).await;
        totals.replica_crashes += 1;
        trace(|| format!("replica {r} down, power loss {power_loss}"));
        election::change(&mut self.st, &REPLICAS, r as u16, Event::Failed, false);
        self.apply(model, totals).await
    }

    /// Replica `r` opens its log again (recovery) and reports itself online.
    pub(super) async fn restart(&mut self, r: usize, model: &mut Model, totals: &mut Totals) -> Result<(), String> {
        let replica = &mut self.replicas[r];
        let log = Log::open(&replica.dir, self.cfg.clone()).await.map_err(|e| format!("replica {r}: recovery failed: {e}"))?;
        trace(|| format!("replica {r} restarted: {:?} {:?}", log.replica_end(), log.offsets()));
        replica.log = Some(log);
        election::change(&mut self.st, &REPLICAS, r as u16, Event::Online, false);
        self.apply(model, totals).await
    }

    /// The machine stops — cleanly, or in a power loss that each disk survives in its own way — and
    /// the broker starts again: its leaders lead in a new epoch.
    pub(super) async fn machine_restart(
        &mut self,
        clean: bool,
        rng: &mut Rng,
        model: &mut Model,
        totals: &mut Totals,
    ) -> Result<(), String> {
        for replica in &mut self.replicas {
            if clean {
                // A disk due to die does so during the shutdown: the process dies there.
                if let Some(log) = replica.log.take() {
                    match log.close().await {
                        Err(e) if !replica.disk.is_down() => return Err(format!("clean close: {e}")),
                        _ => {}
                    }
                }
                replica.disk.kill();
                replica.role = None;
            } else {
                replica.die(Some(rng.next_u64()), totals).await;
            }
        }
        totals.machine_restarts += 1;
        trace(|| format!("machine restart, clean {clean}"));
        election::restarted(&mut self.st);
        for r in 0..self.replicas.len() {
            let log = Log::open(&self.replicas[r].dir, self.cfg.clone()).await.map_err(|e| format!("replica {r}: recovery failed: {e}"))?;
            self.replicas[r].log = Some(log);
        }
        for r in 0..self.replicas.len() {
            election::change(&mut self.st, &REPLICAS, r as u16, Event::Online, false);
        }
        self.apply(model, totals).await
    }

    /// The controller takes `isr` as the ISR, if the leader asked on what it still records.
    pub(super) async fn alter_isr(
        &mut self,
        from: usize,
        before: Vec<u16>,
        isr: Vec<u16>,
        model: &mut Model,
        totals: &mut Totals,
    ) -> Result<(), String> {
        if self.st.leader != Some(from as u16) || self.st.isr != before {
            return Ok(());
        }
        self.st.offline.retain(|r| !isr.contains(r));
        self.st.isr = isr;
        totals.isr_changes += 1;
        trace(|| format!("ISR {:?}", self.st.isr));
        self.apply(model, totals).await
    }

    /// One fetch of follower `f` from the leader, as `follower::run` makes it.
    pub(super) async fn replicate(&mut self, f: usize, max_bytes: usize, model: &mut Model, totals: &mut Totals) -> Result<(), String> {
        let Some((l, llog, leader)) = self.leader() else { return Ok(()) };
        let (Some(flog), Some(Role::Follower { reconciled, .. })) = (self.up(f).cloned(), &self.replicas[f].role) else { return Ok(()) };
        if !*reconciled {
            trace(|| {
                format!(
                    "follower {f} reconciles: its epoch {:?}, the leader's answer {:?}",
                    flog.latest_epoch(),
                    flog.latest_epoch().map(|e| llog.end_offset_for(e))
                )
            });
            if let Some(mine) = flog.latest_epoch() {
                if let Some(cut) = follower::cut_for(&flog, mine, llog.end_offset_for(mine)) {
                    return self.cut(f, cut, totals).await;
                }
            }
            if let Some(Role::Follower { reconciled, .. }) = &mut self.replicas[f].role {
                *reconciled = true;
            }
        }
        let end = flog.replica_end();
        let fetch = FollowerFetch { follower: f as u16, offset: end.written, end, max_bytes, max_wait: Duration::ZERO };
        let before = leader.isr();
        let mut asked = None;
        let answer = leader::answer(&leader, &llog, self.min_isr, fetch, |isr| asked = Some(isr)).await;
        if let Some(isr) = asked {
            self.alter_isr(l, before, isr, model, totals).await?;
        }
        match answer {
            Ok(fetched) => {
                if let Some(cut) = follower::straddled(&flog, &fetched.batches) {
                    return self.cut(f, cut, totals).await;
                }
                totals.batches_copied += fetched.batches.len() as u64;
                let copied = follower::append_fetched(&flog, fetched.batches).await;
                match copied.and(follower::follow_leader(&flog, fetched.high_watermark, fetched.log_start).await) {
                    Err(_) if self.replicas[f].disk.is_down() => Ok(()),
                    Err(e) => Err(format!("follower {f} copying: {e}")),
                    Ok(()) => Ok(()),
                }
            }
            Err(Refused::OutOfRange { log_start, log_end }) => {
                self.cut(f, follower::out_of_range(end.written, log_start, log_end), totals).await
            }
            Err(Refused::Code(_)) if self.replicas[l].disk.is_down() => Ok(()),
            Err(Refused::Code(code)) => Err(format!("the leader refused a fetch at {} with error {code}", end.written)),
        }
    }

    /// Cuts follower `f`'s copy (`partitions::reopen_cut`): closed, cut, opened again.
    pub(super) async fn cut(&mut self, f: usize, cut: Cut, totals: &mut Totals) -> Result<(), String> {
        let replica = &mut self.replicas[f];
        let Some(log) = replica.log.take() else { return Ok(()) };
        let _ = log.close().await;
        totals.cuts += 1;
        let done = match cut {
            Cut::To(offset) => truncate::truncate_closed(&replica.dir, offset).await,
            Cut::RestartAt(offset) => truncate::restart_at(&replica.dir, offset).await,
        };
        if replica.disk.is_down() {
            return Ok(()); // `step` finds the disk down and takes the replica down
        }
        done.map_err(|e| format!("cutting replica {f} ({cut:?}): {e}"))?;
        let log = Log::open(&replica.dir, self.cfg.clone()).await;
        if replica.disk.is_down() {
            return Ok(());
        }
        let log = log.map_err(|e| format!("replica {f}: opening after a cut: {e}"))?;
        log.follow();
        trace(|| format!("replica {f} cut {cut:?}: {:?} {:?}", log.replica_end(), log.offsets()));
        replica.log = Some(log);
        replica.role = Some(Role::Follower { epoch: self.st.epoch, reconciled: false });
        Ok(())
    }
}
