//! The API versions Weir implements, and advertises in ApiVersions. Nothing is advertised that is
//! not implemented. Produce and Fetch stop below the versions that address topics by id only, and
//! start at the first that carries record format v2 (the only one Weir keeps, as Kafka 4.0): older
//! ones are answered with UNSUPPORTED_VERSION per partition (`ANSWERED_UNSUPPORTED`).

use kafka_protocol::messages::ApiKey;
use std::ops::RangeInclusive;

pub const SUPPORTED: &[(ApiKey, RangeInclusive<i16>)] = &[
    (ApiKey::Produce, 3..=11),
    (ApiKey::Fetch, 4..=16),
    (ApiKey::ListOffsets, 0..=9),
    (ApiKey::Metadata, 0..=12),
    (ApiKey::OffsetForLeaderEpoch, 2..=4),
    (ApiKey::OffsetCommit, 0..=8),
    (ApiKey::OffsetFetch, 1..=8),
    (ApiKey::FindCoordinator, 0..=4),
    (ApiKey::JoinGroup, 0..=9),
    (ApiKey::Heartbeat, 0..=4),
    (ApiKey::LeaveGroup, 0..=5),
    (ApiKey::SyncGroup, 0..=5),
    (ApiKey::DescribeGroups, 0..=5),
    (ApiKey::ListGroups, 0..=5),
    (ApiKey::ApiVersions, 0..=3),
    (ApiKey::CreateTopics, 0..=7),
    (ApiKey::DeleteTopics, 0..=6),
    (ApiKey::InitProducerId, 0..=4),
    (ApiKey::AddPartitionsToTxn, 0..=5),
    (ApiKey::AddOffsetsToTxn, 0..=3),
    (ApiKey::EndTxn, 0..=3),
    (ApiKey::WriteTxnMarkers, 1..=1),
    (ApiKey::TxnOffsetCommit, 0..=3),
    (ApiKey::DescribeConfigs, 0..=4),
    (ApiKey::CreatePartitions, 0..=3),
    (ApiKey::DeleteGroups, 0..=2),
    (ApiKey::DeleteRecords, 0..=2),
    (ApiKey::AlterConfigs, 0..=2),
    (ApiKey::IncrementalAlterConfigs, 0..=1),
    (ApiKey::OffsetDelete, 0..=0),
    (ApiKey::DescribeLogDirs, 1..=4),
    (ApiKey::ElectLeaders, 0..=2),
    (ApiKey::DescribeCluster, 0..=1),
    (ApiKey::DescribeProducers, 0..=0),
    (ApiKey::DescribeTransactions, 0..=0),
    (ApiKey::ListTransactions, 0..=1),
    (ApiKey::DescribeAcls, 1..=3),
    (ApiKey::CreateAcls, 1..=3),
    (ApiKey::DeleteAcls, 1..=3),
];

/// Versions below `kafka-protocol`'s range, read and written by `super::legacy`.
pub const LEGACY: &[(ApiKey, RangeInclusive<i16>)] = &[
    (ApiKey::ListOffsets, 0..=0),
    (ApiKey::OffsetCommit, 0..=1),
    (ApiKey::CreateTopics, 0..=1),
    (ApiKey::DeleteTopics, 0..=0),
    (ApiKey::DescribeConfigs, 0..=0),
];

/// Not advertised, but answered with UNSUPPORTED_VERSION per partition rather than a closed
/// connection: the versions of record formats v0 and v1.
const ANSWERED_UNSUPPORTED: &[(ApiKey, RangeInclusive<i16>)] = &[(ApiKey::Produce, 0..=2), (ApiKey::Fetch, 0..=3)];

pub fn supported(api: ApiKey) -> Option<RangeInclusive<i16>> {
    SUPPORTED.iter().find(|(k, _)| *k == api).map(|(_, r)| r.clone())
}

/// Is `version` of `api` one handled by `super::legacy`?
pub fn is_legacy(api: ApiKey, version: i16) -> bool {
    LEGACY.iter().any(|(k, r)| *k == api && r.contains(&version))
}

pub fn answered_unsupported(api: ApiKey, version: i16) -> bool {
    ANSWERED_UNSUPPORTED.iter().any(|(k, r)| *k == api && r.contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything advertised must be decodable by the wire-format crate.
    #[test]
    fn advertised_versions_are_within_the_codec_range() {
        let outside: Vec<String> = SUPPORTED
            .iter()
            .filter(|(api, range)| {
                let codec = api.valid_versions();
                let below = (*range.start()..codec.min).any(|v| !is_legacy(*api, v));
                below || *range.end() > codec.max
            })
            .map(|(api, range)| format!("{api:?}: advertised {range:?}, codec {}", api.valid_versions()))
            .collect();
        assert!(outside.is_empty(), "{outside:#?}");
    }
}
