//! CreateTopics, DeleteTopics and CreatePartitions: decoded and checked as Kafka's `ControllerApis`
//! does (a name twice in one request is INVALID_REQUEST for that name, topics by id), then carried
//! out by `topics.rs` on the controller shard.

use super::catalog::TopicMeta;
use super::handlers::{count_errors, repeated, respond, respond_legacy, respond_without_throttle, text};
use super::{config, errors, state, topics};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;
use std::collections::{BTreeMap, HashMap};

const DUPLICATE_NAME: &str = "Duplicate topic name.";

/// A topic's configs from a CreateTopics entry; a null value is INVALID_CONFIG, as in Kafka's
/// `ControllerConfigurationValidator`.
fn creatable_configs(configs: &[create_topics_request::CreatableTopicConfig]) -> Result<BTreeMap<String, String>, topics::Refusal> {
    let nulls: Vec<String> = configs.iter().filter(|c| c.value.is_none()).map(|c| c.name.to_string()).collect();
    if !nulls.is_empty() {
        return Err((errors::INVALID_CONFIG, format!("Null value not supported for topic configs: {}", nulls.join(","))));
    }
    Ok(configs.iter().filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string()))).collect())
}

pub async fn create_topics(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let version = req.header.request_api_version;
    let q: CreateTopicsRequest = match version {
        // v0 is v1 without `validate_only`; v1's request is v2's.
        0 => protocol::decode_body_extended(req, &[0], 2)?,
        1 => protocol::decode_body_extended(req, &[], 2)?,
        _ => protocol::decode_body(req)?,
    };
    let st = state();
    let defaults = st.cfg.num_partitions;
    let twice = repeated(q.topics.iter().map(|t| t.name.0.to_string()));
    let mut r = CreateTopicsResponse::default();
    // One answer for each repeated name, nothing created for it.
    for name in &twice {
        let mut res = create_topics_response::CreatableTopicResult::default();
        (res.name, res.error_code, res.error_message) =
            (TopicName(text(name.clone())), errors::INVALID_REQUEST, Some(text(DUPLICATE_NAME)));
        r.topics.push(res);
    }
    for t in q.topics {
        let name = t.name.0.to_string();
        if twice.contains(&name) {
            continue;
        }
        let mut res = create_topics_response::CreatableTopicResult::default();
        res.name = t.name;
        let partitions = if t.num_partitions == -1 { defaults } else { t.num_partitions };
        // Kafka's order: an existing topic is TOPIC_ALREADY_EXISTS whatever else the entry says
        // (a create-if-missing must not fail on its replication factor or configs).
        let exists = st.topic(&name).is_some();
        let outcome = match (topics::replication_factor(t.replication_factor), creatable_configs(&t.configs)) {
            _ if exists => Err((errors::TOPIC_ALREADY_EXISTS, format!("Topic '{name}' already exists."))),
            (Err(refusal), _) | (_, Err(refusal)) => Err(refusal),
            (Ok(_), _) if !t.assignments.is_empty() => Err((
                errors::INVALID_REPLICA_ASSIGNMENT,
                "Weir places replicas itself (one per shard, the same for a partition every time): a manual assignment is not supported"
                    .to_string(),
            )),
            (Ok(r), Ok(configs)) if q.validate_only => {
                topics::validate_new(&name, partitions, &configs).map(|()| TopicMeta::new(name, partitions, configs, r))
            }
            (Ok(r), Ok(configs)) => topics::create(name, partitions, r, configs).await,
        };
        match outcome {
            Ok(meta) => {
                if version >= 5 {
                    res.num_partitions = meta.partitions;
                    res.replication_factor = meta.replication_factor as i16;
                    // Every effective config, as Kafka's controller answers (Java's
                    // `CreateTopicsResult.config`, `kafka-topics --create` read them).
                    res.configs = Some(
                        config::created_topic_configs(&st, &meta)
                            .into_iter()
                            .map(|(name, value, read_only, source)| {
                                let mut c = create_topics_response::CreatableTopicConfigs::default();
                                (c.name, c.value, c.read_only, c.config_source) = (text(name), Some(text(value)), read_only, source);
                                c
                            })
                            .collect(),
                    );
                }
                if version >= 7 && !q.validate_only {
                    res.topic_id = uuid::Uuid::from_u128(meta.id);
                }
            }
            Err((code, msg)) => {
                res.error_code = code;
                res.error_message = Some(text(msg));
            }
        }
        r.topics.push(res);
    }
    if version <= 1 {
        count_errors(req, &r);
        return respond_legacy(req, &protocol::legacy::create_topics_v0_v1_response(&r, version));
    }
    respond(req, &r)
}

/// A topic a DeleteTopics names, by name (v0–v5, and v6+ entries with a name) or by id (v6+).
enum Named {
    Name(String),
    Id(uuid::Uuid),
}

pub async fn delete_topics(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let version = req.header.request_api_version;
    // v0's request is v1's; its response is v1's without the throttle time.
    let q: DeleteTopicsRequest = if version == 0 { protocol::decode_body_extended(req, &[], 1)? } else { protocol::decode_body(req)? };
    let mut r = DeleteTopicsResponse::default();
    let answer = |r: &mut DeleteTopicsResponse, name: Option<String>, id: uuid::Uuid, error: Option<(i16, String)>| {
        let mut res = delete_topics_response::DeletableTopicResult::default();
        res.name = name.map(|n| TopicName(text(n)));
        res.topic_id = id;
        if let Some((code, msg)) = error {
            res.error_code = code;
            res.error_message = Some(text(msg));
        }
        r.responses.push(res);
    };
    // Kafka's `ControllerApis.deleteTopics`: an entry with neither a name nor an id, or both, is
    // INVALID_REQUEST; so is a name or an id given twice (nothing deleted for it).
    let mut named = Vec::new();
    for n in q.topic_names {
        named.push(Named::Name(n.0.to_string()));
    }
    for t in q.topics {
        match (t.name, t.topic_id.is_nil()) {
            (None, true) => {
                answer(&mut r, None, t.topic_id, Some((errors::INVALID_REQUEST, "Neither topic name nor id were specified.".into())))
            }
            (None, false) => named.push(Named::Id(t.topic_id)),
            (Some(n), true) => named.push(Named::Name(n.0.to_string())),
            (Some(n), false) => answer(
                &mut r,
                Some(n.0.to_string()),
                t.topic_id,
                Some((errors::INVALID_REQUEST, "You may not specify both topic name and topic id.".into())),
            ),
        }
    }
    let twice_names = repeated(named.iter().filter_map(|n| if let Named::Name(s) = n { Some(s.clone()) } else { None }));
    let twice_ids = repeated(named.iter().filter_map(|n| if let Named::Id(id) = n { Some(*id) } else { None }));
    for name in &twice_names {
        answer(&mut r, Some(name.clone()), uuid::Uuid::nil(), Some((errors::INVALID_REQUEST, DUPLICATE_NAME.into())));
    }
    for id in &twice_ids {
        answer(&mut r, None, *id, Some((errors::INVALID_REQUEST, "Duplicate topic id.".into())));
    }
    // What to delete: by id (its name now), and by name (its id now, for the answer).
    let st = state();
    let names_by_id = if named.iter().any(|n| matches!(n, Named::Id(_))) { st.topic_names_by_id() } else { Default::default() };
    let mut by_id: HashMap<uuid::Uuid, String> = HashMap::new();
    let mut by_name: Vec<(String, uuid::Uuid)> = Vec::new();
    for n in named {
        match n {
            Named::Id(id) if twice_ids.contains(&id) => {}
            Named::Id(id) => match names_by_id.get(&id.as_u128()) {
                Some(name) => drop(by_id.insert(id, name.clone())),
                None => answer(&mut r, None, id, Some((errors::UNKNOWN_TOPIC_ID, "This server does not host this topic ID.".into()))),
            },
            Named::Name(name) if twice_names.contains(&name) => {}
            Named::Name(name) => {
                let id = st.topic(&name).map_or(uuid::Uuid::nil(), |m| uuid::Uuid::from_u128(m.id));
                by_name.push((name, id));
            }
        }
    }
    // The same topic by name and by id: Kafka deletes neither.
    by_name.retain(|(name, id)| {
        let clash = by_id.remove(id).is_some();
        if clash {
            answer(
                &mut r,
                Some(name.clone()),
                *id,
                Some((errors::INVALID_REQUEST, "The provided topic name maps to an ID that was already supplied.".into())),
            );
        }
        !clash
    });
    drop(st);
    let doomed = by_id.into_iter().map(|(id, name)| (name, Some(id), id)).chain(by_name.into_iter().map(|(name, id)| (name, None, id)));
    for (name, exact, id) in doomed {
        let outcome = topics::delete(name.clone(), exact.map(|i| i.as_u128())).await;
        answer(&mut r, Some(name), if version >= 6 { id } else { uuid::Uuid::nil() }, outcome.err());
    }
    if version == 0 {
        return respond_without_throttle(req, 1, &r);
    }
    respond(req, &r)
}

pub async fn create_partitions(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: CreatePartitionsRequest = protocol::decode_body(req)?;
    let twice = repeated(q.topics.iter().map(|t| t.name.0.to_string()));
    let mut r = CreatePartitionsResponse::default();
    for name in &twice {
        let mut res = create_partitions_response::CreatePartitionsTopicResult::default();
        (res.name, res.error_code, res.error_message) =
            (TopicName(text(name.clone())), errors::INVALID_REQUEST, Some(text(DUPLICATE_NAME)));
        r.results.push(res);
    }
    for t in q.topics {
        let name = t.name.0.to_string();
        if twice.contains(&name) {
            continue;
        }
        let mut res = create_partitions_response::CreatePartitionsTopicResult::default();
        res.name = t.name;
        let count = t.count;
        let validate_only = q.validate_only;
        let outcome = topics::update(name, move |meta| {
            if count <= meta.partitions {
                return Err((errors::INVALID_PARTITIONS, format!("topic has {} partitions; it can only grow", meta.partitions)));
            }
            if validate_only {
                return Err((errors::NONE, String::new()));
            }
            meta.partitions = count;
            Ok(())
        })
        .await;
        if let Err((code, msg)) = outcome {
            res.error_code = code;
            res.error_message = (code != errors::NONE).then(|| text(msg));
        }
        r.results.push(res);
    }
    respond(req, &r)
}
