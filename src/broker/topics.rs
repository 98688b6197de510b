//! Topic control: create, delete, grow and reconfigure topics; open and close partition logs.
//!
//! Changes run on shard 0 (the controller), which persists the catalog and then applies the change
//! on every shard, so a topic is usable on all shards by the time its creation is answered.

use super::admission;
use super::catalog::{self, TopicMeta};
use super::config;
use super::errors;
use super::partitions;
use super::replication;
use super::{state, unix_ms, Partition};
use shards::Notify;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

/// A refused topic change: Kafka error code and message.
pub type Refusal = (i16, String);

pub struct Controller {
    active: bool,
    catalog: RefCell<Option<BTreeMap<String, TopicMeta>>>,
    /// Topics whose creation is being applied on the shards; auto-create waits on these.
    creating: RefCell<HashMap<String, Rc<Notify>>>,
    /// Topics created by naming them, at most `auto.create.topics.rate` a second.
    auto_creates: super::auto_create::Rate,
    /// One catalog write at a time, each writing the catalog as it is when its turn comes.
    saving: shards::Turn,
    /// One dynamic broker config change at a time (read, change, persist, apply).
    configuring: shards::Turn,
    /// Topics a create, delete or partition change runs for (`change_turn`), and its end.
    changing: RefCell<HashSet<String>>,
    changed: Notify,
}

/// Held while a create, delete or partition change of one topic runs.
struct ChangeTurn<'a> {
    ctl: &'a Controller,
    name: String,
}

impl Drop for ChangeTurn<'_> {
    fn drop(&mut self) {
        self.ctl.changing.borrow_mut().remove(&self.name);
        self.ctl.changed.notify_all();
    }
}

impl Controller {
    pub fn new(active: bool, auto_create_rate: u32) -> Self {
        Self {
            active,
            catalog: RefCell::new(None),
            creating: RefCell::new(HashMap::new()),
            auto_creates: super::auto_create::Rate::new(auto_create_rate),
            saving: shards::Turn::default(),
            configuring: shards::Turn::default(),
            changing: RefCell::new(HashSet::new()),
            changed: Notify::default(),
        }
    }

    /// Waits until no other change of topic `name` runs, then holds the turn. A change applied on
    /// the shards while another removed the same topic there left a log of no topic (which the
    /// next topic of that name took over, old records and all) or a directory deleted under a
    /// writer (whose next open failed).
    async fn change_turn(&self, name: &str) -> ChangeTurn<'_> {
        while self.changing.borrow().contains(name) {
            self.changed.notified().await;
        }
        self.changing.borrow_mut().insert(name.to_string());
        ChangeTurn { ctl: self, name: name.to_string() }
    }

    fn with_catalog<R>(&self, f: impl FnOnce(&mut BTreeMap<String, TopicMeta>) -> R) -> Result<R, Refusal> {
        assert!(self.active, "topic changes run on the controller shard");
        let mut cat = self.catalog.borrow_mut();
        if cat.is_none() {
            let loaded = catalog::load(&state().cfg.data_dir).map_err(|e| (errors::KAFKA_STORAGE_ERROR, e.to_string()))?;
            *cat = Some(loaded);
        }
        Ok(f(cat.as_mut().expect("loaded")))
    }

    async fn save(&self) -> Result<(), Refusal> {
        let _turn = self.saving.take().await;
        let encoded = catalog::encode(self.catalog.borrow().as_ref().expect("loaded"));
        catalog::save(&state().cfg.data_dir, encoded).await.map_err(|e| (errors::KAFKA_STORAGE_ERROR, e.to_string()))
    }
}

/// Runs `f` on the controller shard.
async fn on_controller<F, Fut, R>(f: F) -> R
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + 'static,
    R: Send + 'static,
{
    let shard = state().shard.clone();
    shard.submit_to(0, f).await
}

/// Applies `meta` on every shard and waits for all; partitions from `new_from` on were just made.
async fn broadcast_apply(meta: TopicMeta, new_from: i32) -> Result<(), Refusal> {
    let shard = state().shard.clone();
    for s in 0..shard.count {
        let m = meta.clone();
        shard.submit_to(s, move || apply_topic(m, new_from)).await.map_err(|e| (errors::KAFKA_STORAGE_ERROR, e))?;
    }
    Ok(())
}

pub fn validate(name: &str, partitions: i32, configs: &BTreeMap<String, String>) -> Result<(), Refusal> {
    if !catalog::valid_topic_name(name) {
        return Err((errors::INVALID_TOPIC_EXCEPTION, format!("invalid topic name {name:?}")));
    }
    if catalog::is_internal(name) {
        return Err((errors::INVALID_TOPIC_EXCEPTION, format!("{name} is reserved for the broker's internal state")));
    }
    if !(1..=catalog::PARTITIONS_MAX).contains(&partitions) {
        return Err((errors::INVALID_PARTITIONS, format!("partitions must be 1..={}", catalog::PARTITIONS_MAX)));
    }
    for (k, v) in configs {
        config::topic::check(k, v).map_err(|m| (errors::INVALID_CONFIG, m))?;
    }
    Ok(())
}

/// `validate`, and what creating the topic would check against the others (a validate-only
/// CreateTopics, against this shard's copy of the catalog).
pub fn validate_new(name: &str, partitions: i32, configs: &BTreeMap<String, String>) -> Result<(), Refusal> {
    validate(name, partitions, configs)?;
    let st = state();
    let topics = st.topics.borrow();
    if topics.contains_key(name) {
        return Err((errors::TOPIC_ALREADY_EXISTS, format!("Topic '{name}' already exists.")));
    }
    match catalog::collision(topics.keys(), name) {
        Some(other) => Err((errors::INVALID_TOPIC_EXCEPTION, format!("Topic '{name}' collides with existing topic: {other}"))),
        None => Ok(()),
    }
}

/// The replication factor `asked` (−1: `default.replication.factor`) if the broker can place that
/// many replicas of each partition: one per shard a client sees as a broker.
pub fn replication_factor(asked: i16) -> Result<u16, Refusal> {
    let st = state();
    let r = if asked == -1 { i32::from(st.cfg.default_replication_factor) } else { i32::from(asked) };
    let brokers = st.cfg.nodes().len() as i32;
    if r < 1 {
        return Err((
            errors::INVALID_REPLICATION_FACTOR,
            "Replication factor must be larger than 0, or -1 to use the default value.".into(),
        ));
    }
    if r > brokers {
        return Err((
            errors::INVALID_REPLICATION_FACTOR,
            format!("Unable to replicate the partition {r} time(s): The target replication factor of {r} cannot be reached because only {brokers} broker(s) are registered."),
        ));
    }
    Ok(r as u16)
}

/// Partitions of every topic in the catalog.
fn partitions_in(catalog: &BTreeMap<String, TopicMeta>) -> usize {
    catalog.values().map(|m| m.partitions.max(0) as usize).sum()
}

/// Creates a topic, whole or not at all. Fails with TOPIC_ALREADY_EXISTS if it exists, and with
/// POLICY_VIOLATION if the broker cannot take its partitions (`admission`).
pub async fn create(
    name: String,
    partitions: i32,
    replication_factor: u16,
    configs: BTreeMap<String, String>,
) -> Result<TopicMeta, Refusal> {
    create_as(name, partitions, replication_factor, configs, false).await
}

/// `create`; `auto` for a topic created by naming it, which `auto.create.topics.rate` bounds (after
/// `max.partitions`, so that a client past that bound sees why).
async fn create_as(
    name: String,
    partitions: i32,
    replication_factor: u16,
    configs: BTreeMap<String, String>,
    auto: bool,
) -> Result<TopicMeta, Refusal> {
    validate(&name, partitions, &configs)?;
    on_controller(move || async move {
        let ctl = &state().controller;
        let _turn = ctl.change_turn(&name).await;
        let max = state().cfg.max_partitions;
        let meta = TopicMeta::new(name.clone(), partitions, configs, replication_factor);
        ctl.with_catalog(|c| {
            if c.contains_key(&name) {
                return Err((errors::TOPIC_ALREADY_EXISTS, format!("Topic '{name}' already exists.")));
            }
            if let Some(other) = catalog::collision(c.keys(), &name) {
                return Err((errors::INVALID_TOPIC_EXCEPTION, format!("Topic '{name}' collides with existing topic: {other}")));
            }
            admission::admit_partitions(partitions_in(c), partitions as usize, max)?;
            if auto && !ctl.auto_creates.take() {
                let rate = state().cfg.auto_create_topics_rate;
                return Err((
                    errors::LEADER_NOT_AVAILABLE,
                    format!("topics are auto-created at most {rate} a second (auto.create.topics.rate); ask again"),
                ));
            }
            c.insert(name.clone(), meta.clone());
            Ok(())
        })??;
        let done = Rc::new(Notify::default());
        ctl.creating.borrow_mut().insert(name.clone(), done.clone());
        let result = match ctl.save().await {
            Ok(()) => match broadcast_apply(meta.clone(), 0).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Some partition did not open (out of fds or disk, say): undo the whole topic.
                    tracing::warn!(topic = %name, error = %e.1, "topic creation failed; removing what was made");
                    let _ = drop_topic(name.clone()).await;
                    Err(e)
                }
            },
            Err(e) => {
                let _ = ctl.with_catalog(|c| c.remove(&name));
                Err(e)
            }
        };
        ctl.creating.borrow_mut().remove(&name);
        done.notify_all();
        result.map(|()| meta)
    })
    .await
}

/// Returns the topic, creating it with the broker defaults if it does not exist (auto-create).
pub async fn ensure(name: String) -> Result<TopicMeta, Refusal> {
    if let Some(meta) = state().topic(&name) {
        return Ok(meta);
    }
    if catalog::is_internal(&name) {
        return Err((errors::UNKNOWN_TOPIC_OR_PARTITION, format!("{name} is internal: not a topic that can be read or written")));
    }
    let partitions = state().cfg.num_partitions;
    let replication_factor = replication_factor(-1)?;
    match create_as(name.clone(), partitions, replication_factor, BTreeMap::new(), true).await {
        Err((code, _)) if code == errors::TOPIC_ALREADY_EXISTS => {
            // Created concurrently: wait until the controller has applied it everywhere.
            let n = name.clone();
            on_controller(move || async move {
                let pending = state().controller.creating.borrow().get(&n).cloned();
                if let Some(done) = pending {
                    done.notified().await;
                }
            })
            .await;
            state().topic(&name).ok_or((errors::UNKNOWN_TOPIC_OR_PARTITION, format!("topic {name} vanished")))
        }
        other => other,
    }
}

/// Deletes a topic and its data on every shard; with `id`, only the topic of that id (Kafka deletes
/// by id exactly: a topic deleted and created again under the name meanwhile is another).
pub async fn delete(name: String, id: Option<u128>) -> Result<(), Refusal> {
    on_controller(move || async move {
        let ctl = &state().controller;
        let _turn = ctl.change_turn(&name).await;
        match (ctl.with_catalog(|c| c.get(&name).map(|m| m.id))?, id) {
            (None, None) => return Err((errors::UNKNOWN_TOPIC_OR_PARTITION, format!("no topic {name}"))),
            (Some(found), Some(wanted)) if found != wanted => {
                return Err((errors::UNKNOWN_TOPIC_ID, "This server does not host this topic ID.".into()));
            }
            (None, Some(_)) => return Err((errors::UNKNOWN_TOPIC_ID, "This server does not host this topic ID.".into())),
            _ => {}
        }
        drop_topic(name).await
    })
    .await
}

/// Removes a topic's data on every shard, then its catalog entry (on the controller).
///
/// Data first, catalog second: a crash in between leaves an empty topic, never a topic that a later
/// creation under the same name would find full of old data.
async fn drop_topic(name: String) -> Result<(), Refusal> {
    let shard = state().shard.clone();
    for s in 0..shard.count {
        let n = name.clone();
        shard.submit_to(s, move || remove_topic(n)).await;
    }
    let ctl = &state().controller;
    ctl.with_catalog(|c| c.remove(&name))?;
    ctl.save().await
}

/// Changes a topic's partition count (growth only) or configs, then applies it everywhere.
pub async fn update(
    name: String,
    change: impl FnOnce(&mut TopicMeta) -> Result<(), Refusal> + Send + 'static,
) -> Result<TopicMeta, Refusal> {
    on_controller(move || async move {
        let ctl = &state().controller;
        let _turn = ctl.change_turn(&name).await;
        let max = state().cfg.max_partitions;
        let (before, meta) = ctl.with_catalog(|c| -> Result<(TopicMeta, TopicMeta), Refusal> {
            let current = c.get(&name).ok_or((errors::UNKNOWN_TOPIC_OR_PARTITION, format!("no topic {name}")))?.clone();
            let mut next = current.clone();
            change(&mut next)?;
            validate(&next.name, next.partitions, &next.configs)?;
            if next.partitions > current.partitions {
                admission::admit_partitions(partitions_in(c), (next.partitions - current.partitions) as usize, max)?;
            }
            c.insert(name.clone(), next.clone());
            Ok((current, next))
        })??;
        ctl.save().await?;
        if let Err(e) = broadcast_apply(meta.clone(), before.partitions).await {
            // New partitions that did not all open are taken back, with whatever data they hold.
            tracing::warn!(topic = %name, error = %e.1, "topic change failed; restoring the topic as it was");
            ctl.with_catalog(|c| c.insert(name.clone(), before.clone()))?;
            ctl.save().await?;
            let shard = state().shard.clone();
            for s in 0..shard.count {
                let b = before.clone();
                shard.submit_to(s, move || retract_partitions(b)).await;
            }
            return Err(e);
        }
        Ok(meta)
    })
    .await
}

/// Warns at start of partition directories this shard would own whose topic `topics` does not
/// name: records a lost or damaged topics.meta forgot. They are left alone (and moved aside if a
/// topic of that name is created).
pub fn warn_of_unnamed_dirs(topics: &BTreeMap<String, TopicMeta>) {
    let st = state();
    let (me, count) = (st.shard.id, st.shard.count);
    let unnamed: Vec<String> = shards::fs::list(st.log_dir())
        .unwrap_or_default()
        .into_iter()
        .filter(|name| {
            if name.ends_with(".orphaned") {
                return false;
            }
            let (base, replica) = match name.rsplit_once(".replica-") {
                Some((base, s)) => (base, s.parse::<usize>().ok()),
                None => (name.as_str(), None),
            };
            let Some((topic, p)) = base.rsplit_once('-') else { return false };
            let Ok(p) = p.parse::<u32>() else { return false };
            let mine = replica.map_or(shards::placement(topic, p, count) == me, |s| s == me);
            mine && !topics.contains_key(topic) && !topic.starts_with("__") && shards::fs::list(&st.log_dir().join(name)).is_ok()
        })
        .collect();
    if !unnamed.is_empty() {
        let first: Vec<&str> = unnamed.iter().take(5).map(String::as_str).collect();
        tracing::warn!(count = unnamed.len(), first = ?first, "partition directories whose topic topics.meta does not name (was it lost or damaged?): left alone");
    }
}

/// Makes this shard know `meta` at start: the partitions it owns are registered closed and open on
/// first use (`partitions`).
pub fn restore_topic(meta: TopicMeta) {
    let st = state();
    st.topic_ids.borrow_mut().insert(meta.id, meta.name.clone());
    st.topics.borrow_mut().insert(meta.name.clone(), meta.clone());
    for p in (0..meta.partitions).filter(|&p| st.holds_replica(&meta, p)) {
        partitions::register_dormant(&meta, p);
        // Replicas copy from, and report to, one another from the start, not on first use.
        if meta.replication_factor > 1 {
            let name = meta.name.clone();
            shards::spawn_local(async move {
                let _ = partitions::local(&name, p).await;
            })
            .detach();
        }
    }
}

/// Makes this shard know `meta` and open the partitions it owns. A partition that cannot open is
/// offline (requests for it answer KAFKA_STORAGE_ERROR) and the others open; the first failure is
/// returned. Partitions from `new_from` on were just created.
pub async fn apply_topic(meta: TopicMeta, new_from: i32) -> Result<(), String> {
    let st = state();
    st.topic_ids.borrow_mut().insert(meta.id, meta.name.clone());
    st.topics.borrow_mut().insert(meta.name.clone(), meta.clone());
    let mut first_failure = None;
    for p in 0..meta.partitions {
        if !st.holds_replica(&meta, p) || st.partition(&meta.name, p).is_some() || st.closed.borrow().contains_key(&(meta.name.clone(), p))
        {
            continue;
        }
        // A partition just created: a directory under its name holds no records of this topic —
        // what a failed deletion of an earlier topic of that name left, or records a lost or
        // damaged topics.meta no longer names. It is moved aside, not removed: removing it made a
        // produce to a topic a lost topics.meta forgot remove all of that topic's records. Only
        // for a new partition: an older one not open here is offline (its disk failed, say), and
        // its directory is its records.
        let dir = st.partition_dir(&meta.name, p);
        if p >= new_from && shards::fs::exists(&dir) {
            let aside = dir.with_file_name(format!("{}.{}.orphaned", dir.file_name().unwrap_or_default().to_string_lossy(), unix_ms()));
            tracing::warn!(dir = %dir.display(), moved_to = %aside.display(), "a new partition's directory held records topics.meta does not name (a deleted topic's, or topics.meta was lost): moved aside");
            if let Err(e) = shards::fs::rename(&dir, &aside).await {
                first_failure.get_or_insert(format!("{}: {e}", dir.display()));
                continue;
            }
        }
        if let Err(e) = partitions::open(&meta, p).await {
            first_failure.get_or_insert(e);
        }
    }
    apply_configs();
    replication::apply(&meta);
    first_failure.map_or(Ok(()), Err)
}

/// Drops the partitions this shard holds of `meta`'s topic beyond its partition count, with
/// their data (a failed CreatePartitions undone).
async fn retract_partitions(meta: TopicMeta) {
    partitions::drop_from(&meta.name, meta.partitions).await;
    state().topics.borrow_mut().insert(meta.name.clone(), meta);
}

/// Applies every topic's current configs to its logs and produce rules.
fn apply_configs() {
    let st = state();
    let parts = st.partitions.borrow();
    let topics = st.topics.borrow();
    let defaults = config::shard_topic_defaults(&st);
    // Settings are per topic: resolved once for all its partitions here.
    let mut settings = HashMap::new();
    for ((topic, _), part) in parts.iter() {
        if let Some(meta) = topics.get(topic) {
            let (cfg, rules) = settings.entry(topic.as_str()).or_insert_with(|| config::partition_settings(&st.cfg, &defaults, meta));
            part.log.set_config(cfg.clone());
            part.rules.set(*rules);
        }
    }
}

/// Changes the dynamic broker configs on the controller, persists them, and applies them on
/// every shard (the topic defaults they set reach every partition without an override).
pub async fn update_broker_configs(
    change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), Refusal> + Send + 'static,
) -> Result<(), Refusal> {
    on_controller(move || async move {
        let st = state();
        let _turn = st.controller.configuring.take().await;
        let mut next = st.dynamic_broker.borrow().clone();
        change(&mut next)?;
        config::broker::save(&st.cfg.data_dir, &next).await.map_err(|e| (errors::KAFKA_STORAGE_ERROR, e.to_string()))?;
        let shard = st.shard.clone();
        for s in 0..shard.count {
            let n = next.clone();
            shard
                .submit_to(s, move || async move {
                    *state().dynamic_broker.borrow_mut() = n;
                    apply_configs();
                })
                .await;
        }
        Ok(())
    })
    .await
}

async fn remove_topic(name: String) {
    let st = state();
    if let Some(meta) = st.topics.borrow_mut().remove(&name) {
        st.topic_ids.borrow_mut().remove(&meta.id);
    }
    partitions::drop_from(&name, 0).await;
}

/// Deletes segments past retention on this shard's partitions, periodically.
pub async fn retention_loop() {
    let every = std::time::Duration::from_millis(state().cfg.retention_check_ms);
    loop {
        shards::sleep(every).await;
        let now_ms = super::unix_ms();
        for (topic, p) in partitions::dormant_with_closed_segments() {
            let _ = partitions::local(&topic, p).await;
        }
        let parts: Vec<(String, i32, Rc<Partition>)> =
            state().partitions.borrow().iter().map(|((t, p), v)| (t.clone(), *p, v.clone())).collect();
        for (topic, p, part) in parts {
            match part.log.enforce_retention(now_ms).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(%topic, partition = p, segments = n, "retention deleted segments")
                }
                Err(e) => tracing::warn!(%topic, partition = p, error = %e, "retention failed"),
            }
        }
    }
}
