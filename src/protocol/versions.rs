//! The API versions Weir implements, and advertises in ApiVersions. Nothing is advertised that is
//! not implemented. Produce and Fetch stop below the versions that address topics by id only.

use kafka_protocol::messages::ApiKey;
use std::ops::RangeInclusive;

pub const SUPPORTED: &[(ApiKey, RangeInclusive<i16>)] = &[
    (ApiKey::Produce, 3..=9),
    (ApiKey::Fetch, 4..=12),
    (ApiKey::ListOffsets, 1..=7),
    (ApiKey::Metadata, 1..=12),
    (ApiKey::OffsetCommit, 2..=8),
    (ApiKey::OffsetFetch, 1..=8),
    (ApiKey::FindCoordinator, 0..=4),
    (ApiKey::JoinGroup, 0..=9),
    (ApiKey::Heartbeat, 0..=4),
    (ApiKey::LeaveGroup, 0..=5),
    (ApiKey::SyncGroup, 0..=5),
    (ApiKey::DescribeGroups, 0..=5),
    (ApiKey::ListGroups, 0..=5),
    (ApiKey::ApiVersions, 0..=3),
    (ApiKey::CreateTopics, 2..=7),
    (ApiKey::DeleteTopics, 1..=6),
    (ApiKey::InitProducerId, 0..=4),
    (ApiKey::DescribeConfigs, 1..=4),
    (ApiKey::CreatePartitions, 0..=3),
    (ApiKey::DeleteGroups, 0..=2),
    (ApiKey::DeleteRecords, 0..=2),
    (ApiKey::AlterConfigs, 0..=2),
    (ApiKey::IncrementalAlterConfigs, 0..=1),
    (ApiKey::OffsetDelete, 0..=0),
    (ApiKey::DescribeCluster, 0..=1),
];

pub fn supported(api: ApiKey) -> Option<RangeInclusive<i16>> {
    SUPPORTED.iter().find(|(k, _)| *k == api).map(|(_, r)| r.clone())
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
                codec.min > *range.start() || *range.end() > codec.max
            })
            .map(|(api, range)| format!("{api:?}: advertised {range:?}, codec {}", api.valid_versions()))
            .collect();
        assert!(outside.is_empty(), "{outside:#?}");
    }
}
