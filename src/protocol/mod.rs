//! The Kafka wire format: size-prefixed frames, request headers, and the versions Weir speaks.
//!
//! Encoding and decoding of message bodies is the `kafka-protocol` crate's; record bytes on the
//! produce and fetch paths stay `Bytes` slices of the frame and are never decoded here.
//! Tagged fields at their default values are not written (as Apache Kafka does): librdkafka 2.0.2
//! mis-parses an ApiVersions v3 response that writes them.

pub mod budget;
pub mod compression;
pub mod fetch_response;
pub mod frame;
pub mod legacy;
pub mod versions;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame of {0} bytes is over the limit")]
    FrameTooLarge(i64),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A request Kafka answers by closing the connection (an acks=0 produce that failed).
    #[error("{0}")]
    CloseConnection(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A request's header and its still-encoded body.
pub struct Request {
    pub api: ApiKey,
    pub header: RequestHeader,
    pub body: Bytes,
    /// The client's address as the broker saw it (for DescribeGroups), empty if unknown.
    pub peer: String,
}

/// Decodes the request header; the body is left for the handler. An API version Weir does not speak
/// is an error, except for ApiVersions (KIP-511: answered with an error and the supported list).
pub fn decode_header(mut frame: Bytes) -> Result<Request, ProtocolError> {
    if frame.len() < 8 {
        return Err(ProtocolError::Malformed(format!("{} byte header", frame.len())));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| ProtocolError::UnknownApi(key))?;
    let supported = versions::supported(api).ok_or(ProtocolError::UnknownApi(key))?;
    let header_version = if supported.contains(&version) || versions::answered_unsupported(api, version) {
        api.request_header_version(version)
    } else if api == ApiKey::ApiVersions {
        // Unknown newer ApiVersions: parse with the oldest header, which every version starts with.
        1
    } else {
        return Err(ProtocolError::UnsupportedVersion { api, version });
    };
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    Ok(Request { api, header, body: frame, peer: String::new() })
}

/// Decodes a request body of the version in its header.
pub fn decode_body<T: Decodable>(req: &Request) -> Result<T, ProtocolError> {
    let mut body = req.body.clone();
    T::decode(&mut body, req.header.request_api_version).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Decodes a body after appending `suffix`: an old version that is a newer one minus its trailing
/// fields (DescribeConfigs v0 = v1 without `include_synonyms`, CreateTopics v0 = v1 without
/// `validate_only`) is read as the newer one with those fields false.
pub fn decode_body_extended<T: Decodable>(req: &Request, suffix: &[u8], as_version: i16) -> Result<T, ProtocolError> {
    let mut body = BytesMut::from(&req.body[..]);
    body.extend_from_slice(suffix);
    T::decode(&mut body.freeze(), as_version).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Encodes a whole response frame: size, header, body.
pub fn encode_response<T: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &T) -> Result<Bytes, ProtocolError> {
    let mut out = BytesMut::with_capacity(256);
    out.extend_from_slice(&[0, 0, 0, 0]);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut out, api.response_header_version(version)).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    body.encode(&mut out, version).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}
