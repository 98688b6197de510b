//! The topic list of a consumer-protocol subscription (the member metadata Kafka consumers send),
//! for OffsetDelete's GROUP_SUBSCRIBED_TO_TOPIC.
//!
//! Every version of `ConsumerProtocolSubscription` starts with `version i16 | topics [i32 count, i16
//! length + UTF-8 …]`; later fields are ignored, so versions newer than Kafka's today read the same.
//! Read by hand and bounded by the bytes present: the count is the client's and is never trusted for
//! an allocation.

/// The subscribed topics, or `None` if the metadata is not a consumer subscription.
pub fn topics(metadata: &[u8]) -> Option<Vec<String>> {
    let (version, rest) = metadata.split_first_chunk::<2>()?;
    if i16::from_be_bytes(*version) < 0 {
        return None;
    }
    let (count, mut rest) = rest.split_first_chunk::<4>()?;
    let count = i32::from_be_bytes(*count);
    // Each topic takes at least its 2-byte length.
    if count < 0 || count as usize > rest.len() / 2 {
        return None;
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::try_from(i16::from_be_bytes(*len)).ok()?;
        let name = tail.get(..len)?;
        out.push(String::from_utf8(name.to_vec()).ok()?);
        rest = &tail[len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::topics;

    fn subscription(version: i16, names: &[&str]) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend_from_slice(&(names.len() as i32).to_be_bytes());
        for n in names {
            b.extend_from_slice(&(n.len() as i16).to_be_bytes());
            b.extend_from_slice(n.as_bytes());
        }
        b.extend_from_slice(&[0, 0, 0, 0]); // user data and later fields: ignored
        b
    }

    #[test]
    fn reads_topics_of_any_version() {
        assert_eq!(topics(&subscription(0, &["a", "bb"])), Some(vec!["a".to_string(), "bb".to_string()]));
        assert_eq!(topics(&subscription(3, &[])), Some(vec![]));
    }

    #[test]
    fn refuses_what_is_not_a_subscription() {
        assert_eq!(topics(b""), None);
        assert_eq!(topics(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None, "a count beyond the bytes present");
        assert_eq!(topics(&subscription(-1, &["a"])), None);
        let mut cut = subscription(0, &["abc"]);
        cut.truncate(8);
        assert_eq!(topics(&cut), None);
    }
}
