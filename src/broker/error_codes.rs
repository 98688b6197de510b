//! The error codes a response carries, wherever they sit in it (top level, per topic, per
//! partition, per member…): counted by `handlers::respond` into `weir_request_errors_total`, as
//! Kafka counts `ErrorsPerSec` from a response's error counts.

use kafka_protocol::messages::*;

pub trait ErrorCodes {
    /// Calls `f` with every error code in the response, NONE included.
    fn each_error(&self, f: &mut dyn FnMut(i16));
}

macro_rules! error_codes {
    ($($t:ty => |$r:ident, $f:ident| $body:expr;)*) => {
        $(impl ErrorCodes for $t {
            fn each_error(&self, $f: &mut dyn FnMut(i16)) {
                let $r = self;
                $body
            }
        })*
    };
}

error_codes! {
    ApiVersionsResponse => |r, f| f(r.error_code);
    MetadataResponse => |r, f| for t in &r.topics {
        f(t.error_code);
        t.partitions.iter().for_each(|p| f(p.error_code));
    };
    ProduceResponse => |r, f| r.responses.iter().flat_map(|t| &t.partition_responses).for_each(|p| f(p.error_code));
    ListOffsetsResponse => |r, f| r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    OffsetForLeaderEpochResponse => |r, f| r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    DescribeLogDirsResponse => |r, f| {
        f(r.error_code);
        r.results.iter().for_each(|d| f(d.error_code));
    };
    ElectLeadersResponse => |r, f| {
        f(r.error_code);
        r.replica_election_results.iter().flat_map(|t| &t.partition_result).for_each(|p| f(p.error_code));
    };
    DeleteRecordsResponse => |r, f| r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    DescribeAclsResponse => |r, f| f(r.error_code);
    CreateAclsResponse => |r, f| r.results.iter().for_each(|c| f(c.error_code));
    DeleteAclsResponse => |r, f| r.filter_results.iter().for_each(|d| f(d.error_code));
    CreateTopicsResponse => |r, f| r.topics.iter().for_each(|t| f(t.error_code));
    DeleteTopicsResponse => |r, f| r.responses.iter().for_each(|t| f(t.error_code));
    CreatePartitionsResponse => |r, f| r.results.iter().for_each(|t| f(t.error_code));
    DescribeConfigsResponse => |r, f| r.results.iter().for_each(|c| f(c.error_code));
    IncrementalAlterConfigsResponse => |r, f| r.responses.iter().for_each(|c| f(c.error_code));
    AlterConfigsResponse => |r, f| r.responses.iter().for_each(|c| f(c.error_code));
    DescribeClusterResponse => |r, f| f(r.error_code);
    InitProducerIdResponse => |r, f| f(r.error_code);
    AddPartitionsToTxnResponse => |r, f| {
        f(r.error_code);
        r.results_by_topic_v3_and_below.iter().flat_map(|t| &t.results_by_partition).for_each(|p| f(p.partition_error_code));
        r.results_by_transaction
            .iter()
            .flat_map(|x| &x.topic_results)
            .flat_map(|t| &t.results_by_partition)
            .for_each(|p| f(p.partition_error_code));
    };
    EndTxnResponse => |r, f| f(r.error_code);
    FindCoordinatorResponse => |r, f| {
        f(r.error_code);
        r.coordinators.iter().for_each(|c| f(c.error_code));
    };
    JoinGroupResponse => |r, f| f(r.error_code);
    SyncGroupResponse => |r, f| f(r.error_code);
    HeartbeatResponse => |r, f| f(r.error_code);
    LeaveGroupResponse => |r, f| {
        f(r.error_code);
        r.members.iter().for_each(|m| f(m.error_code));
    };
    OffsetCommitResponse => |r, f| r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    OffsetFetchResponse => |r, f| {
        f(r.error_code);
        r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        for g in &r.groups {
            f(g.error_code);
            g.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        }
    };
    DescribeGroupsResponse => |r, f| r.groups.iter().for_each(|g| f(g.error_code));
    ListGroupsResponse => |r, f| f(r.error_code);
    DeleteGroupsResponse => |r, f| r.results.iter().for_each(|g| f(g.error_code));
    OffsetDeleteResponse => |r, f| {
        f(r.error_code);
        r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    };
    TxnOffsetCommitResponse => |r, f| r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    AddOffsetsToTxnResponse => |r, f| f(r.error_code);
    DescribeTransactionsResponse => |r, f| r.transaction_states.iter().for_each(|t| f(t.error_code));
    ListTransactionsResponse => |r, f| f(r.error_code);
    DescribeProducersResponse => |r, f| r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    WriteTxnMarkersResponse => |r, f| r.markers.iter().flat_map(|m| &m.topics).flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
}
