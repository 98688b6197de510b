//! ElectLeaders (API 43, KIP-460): a preferred or unclean leader election for the partitions named
//! (all of them when none are), run by the controller (`replication::election`). For "all
//! partitions", those that need no election are left out of the answer, as Kafka does.

use super::handlers::respond;
use super::replication::election::{self, Kind};
use super::{errors, state};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

pub async fn handle(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: ElectLeadersRequest = protocol::decode_body(req)?;
    let kind = match q.election_type {
        0 => Kind::Preferred,
        1 => Kind::Unclean,
        _ => {
            let mut r = ElectLeadersResponse::default();
            r.error_code = errors::INVALID_REQUEST;
            return respond(req, &r);
        }
    };
    let everything = q.topic_partitions.is_none();
    let asked: Vec<(String, Vec<i32>)> = match q.topic_partitions {
        Some(topics) => topics.into_iter().map(|t| (t.topic.to_string(), t.partitions)).collect(),
        None => state().topics.borrow().values().map(|m| (m.name.clone(), (0..m.partitions).collect())).collect(),
    };
    let mut r = ElectLeadersResponse::default();
    for (topic, partitions) in asked {
        let mut results = Vec::new();
        for p in partitions {
            let code = if state().topic(&topic).is_some() {
                election::apply_election(topic.clone(), p, kind).await
            } else {
                errors::UNKNOWN_TOPIC_OR_PARTITION
            };
            if everything && code == errors::ELECTION_NOT_NEEDED {
                continue;
            }
            let mut pr = PartitionResult::default();
            pr.partition_id = p;
            pr.error_code = code;
            pr.error_message = (code != errors::NONE).then(|| StrBytes::from_string(message(code).to_string()));
            results.push(pr);
        }
        if !results.is_empty() {
            let mut t = ReplicaElectionResult::default();
            t.topic = TopicName(StrBytes::from_string(topic));
            t.partition_result = results;
            r.replica_election_results.push(t);
        }
    }
    respond(req, &r)
}

fn message(code: i16) -> &'static str {
    match code {
        errors::ELECTION_NOT_NEEDED => "Leader election not needed for topic partition.",
        errors::PREFERRED_LEADER_NOT_AVAILABLE => "The preferred leader is not in sync or not online.",
        errors::ELIGIBLE_LEADERS_NOT_AVAILABLE => "No replica of the partition is online.",
        errors::UNKNOWN_TOPIC_OR_PARTITION => "This server does not host this topic-partition.",
        _ => "The election was not made.",
    }
}
