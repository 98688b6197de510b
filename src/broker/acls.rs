//! DescribeAcls, CreateAcls and DeleteAcls, answered as a Kafka broker with no authorizer answers
//! them (`AclApis`): SECURITY_DISABLED, "No Authorizer is configured." Weir has no ACLs (every
//! operation is allowed to everyone, `docs/protocol.md`); `kafka-acls.sh` and the Admin clients
//! then say so instead of finding the API missing.

use super::errors;
use super::handlers::{respond, text};
use crate::protocol::{self, ProtocolError, Request};
use bytes::Bytes;
use kafka_protocol::messages::*;

const NO_AUTHORIZER: &str = "No Authorizer is configured.";
/// DescribeAcls's wording of it (Kafka's `AclApis`).
const NO_AUTHORIZER_ON_BROKER: &str = "No Authorizer is configured on the broker";

pub fn describe_acls(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let _: DescribeAclsRequest = protocol::decode_body(req)?;
    let mut r = DescribeAclsResponse::default();
    (r.error_code, r.error_message) = (errors::SECURITY_DISABLED, Some(text(NO_AUTHORIZER_ON_BROKER)));
    respond(req, &r)
}

pub fn create_acls(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: CreateAclsRequest = protocol::decode_body(req)?;
    let mut r = CreateAclsResponse::default();
    r.results = q
        .creations
        .iter()
        .map(|_| {
            let mut c = create_acls_response::AclCreationResult::default();
            (c.error_code, c.error_message) = (errors::SECURITY_DISABLED, Some(text(NO_AUTHORIZER)));
            c
        })
        .collect();
    respond(req, &r)
}

pub fn delete_acls(req: &Request) -> Result<Option<Bytes>, ProtocolError> {
    let q: DeleteAclsRequest = protocol::decode_body(req)?;
    let mut r = DeleteAclsResponse::default();
    r.filter_results = q
        .filters
        .iter()
        .map(|_| {
            let mut d = delete_acls_response::DeleteAclsFilterResult::default();
            (d.error_code, d.error_message) = (errors::SECURITY_DISABLED, Some(text(NO_AUTHORIZER)));
            d
        })
        .collect();
    respond(req, &r)
}
