//! The records inside a v2 batch's records section (inflated first, when compressed): Kafka's
//! record layout, written for weir-bench and tests, and read as Kafka's `DefaultRecord.readFrom`
//! reads it — a record whose fields do not end exactly at its length is damage, not a hint.

use std::ops::Range;

/// One record to put in a batch.
pub struct NewRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// A record read back from a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord<'a> {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// The records section of a batch (what a codec compresses), offset deltas 0, 1, 2…, timestamp
/// deltas 0.
pub fn encode_records(records: &[NewRecord<'_>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(records.iter().map(|r| r.value.map_or(0, |v| v.len()) + 32).sum());
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        for field in [r.key, r.value] {
            match field {
                None => put_varint(&mut rec, -1),
                Some(b) => {
                    put_varint(&mut rec, b.len() as i64);
                    rec.extend_from_slice(b);
                }
            }
        }
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in r.headers {
            put_varint(&mut rec, k.len() as i64);
            rec.extend_from_slice(k.as_bytes());
            put_varint(&mut rec, v.len() as i64);
            rec.extend_from_slice(v);
        }
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    body
}

/// Zig-zag varint, as Kafka records use.
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// The records of a records section, given its batch's base offset and timestamp; `None` unless
/// `body` is exactly `count` records that read.
pub fn records_in(body: &[u8], base: i64, ts: i64, count: i32) -> Option<Vec<ReadRecord<'_>>> {
    Some(record_spans(body, base, ts, count)?.into_iter().map(|(_, r)| r).collect())
}

/// `records_in`, with where each record's bytes (its length prefix included) lie in `body`. Offset
/// deltas may have gaps: compaction leaves them.
pub fn record_spans(body: &[u8], base: i64, ts: i64, count: i32) -> Option<Vec<(Range<usize>, ReadRecord<'_>)>> {
    let count = usize::try_from(count).ok()?;
    // The count is untrusted: a record takes at least 7 bytes, so the bytes bound it.
    let mut out = Vec::with_capacity(count.min(body.len() / 7));
    let mut at = 0;
    while at < body.len() {
        if out.len() == count {
            return None; // more records than the header says
        }
        let r = read_record(body, &mut at).ok()?;
        let record = ReadRecord { offset: base + r.offset_delta, timestamp_ms: ts + r.timestamp_delta, key: r.key, value: r.value };
        out.push((r.span, record));
    }
    (out.len() == count).then_some(out)
}

/// Kafka's check of a producer's records: exactly `count` of them filling `body`, each reading,
/// offset deltas 0, 1, 2…. `Err` says what did not hold.
pub fn check(body: &[u8], count: i32) -> Result<(), &'static str> {
    let mut at = 0;
    for index in 0..i64::from(count) {
        if read_record(body, &mut at)?.offset_delta != index {
            return Err("offset deltas not 0, 1, 2…");
        }
    }
    if at != body.len() {
        return Err("bytes past the last record");
    }
    Ok(())
}

/// The fewest bytes a record takes after its length: attributes, timestamp and offset deltas, key
/// and value lengths, header count (one byte each at their smallest).
const RECORD_BYTES_MIN: usize = 6;

struct Parsed<'a> {
    span: Range<usize>,
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

/// The record at `*at`, which moves past it: a length of at least `RECORD_BYTES_MIN` within
/// `body`, and fields read within that length — headers included, each with a key — ending exactly
/// at it. Reading within the length matters: a length of 0 once made a 64 MiB run of zeros 64 M
/// records of one byte each.
fn read_record<'a>(body: &'a [u8], at: &mut usize) -> Result<Parsed<'a>, &'static str> {
    let start = *at;
    let len = get_varint(body, at).and_then(|l| usize::try_from(l).ok()).filter(|&l| l >= RECORD_BYTES_MIN);
    let end = len.and_then(|l| at.checked_add(l)).filter(|&e| e <= body.len()).ok_or("a record's length")?;
    let rec = &body[..end];
    *at += 1; // attributes
    let timestamp_delta = get_varint(rec, at).ok_or("a timestamp delta")?;
    let offset_delta = get_varint(rec, at).ok_or("an offset delta")?;
    let key = get_bytes(rec, at).ok_or("a key")?;
    let value = get_bytes(rec, at).ok_or("a value")?;
    let headers = get_varint(rec, at).filter(|&n| n >= 0).ok_or("a header count")?;
    // Each header takes at least 2 bytes, so a claimed count stops at the record's end.
    for _ in 0..headers {
        get_bytes(rec, at).flatten().ok_or("a header key")?;
        get_bytes(rec, at).ok_or("a header value")?;
    }
    if *at != end {
        return Err("a record's length");
    }
    Ok(Parsed { span: start..end, timestamp_delta, offset_delta, key, value })
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

fn get_bytes<'a>(bytes: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = get_varint(bytes, at)?;
    if len < 0 {
        return Some(None);
    }
    let end = at.checked_add(len as usize)?;
    let out = bytes.get(*at..end)?;
    *at = end;
    Some(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Vec<u8> {
        let value = [b'x'; 10];
        let record = || NewRecord { key: Some(b"k"), value: Some(&value), headers: &[("h", b"x")] };
        encode_records(&[record(), record(), record()])
    }

    #[test]
    fn records_must_fill_their_lengths_and_the_count() {
        let body = three();
        assert_eq!(record_spans(&body, 0, 0, 3).map(|r| r.len()), Some(3));
        assert!(record_spans(&body, 0, 0, 2).is_none(), "more records than the count");
        assert!(record_spans(&body, 0, 0, 4).is_none(), "fewer records than the count");
        // A run of zeros reads as records of length 0: refused at the first, not stepped through.
        let zeros = vec![0u8; 64 << 20];
        assert!(record_spans(&zeros, 0, 0, 1 << 26).is_none());
        // A length too short for the fields that follow it, and one longer than they are.
        for len in [2, 40] {
            let mut wrong = body.clone();
            wrong[0] = len << 1;
            assert!(record_spans(&wrong, 0, 0, 3).is_none(), "length {len}");
        }
        // A header without a key.
        let mut keyless = body.clone();
        let at = keyless.iter().position(|&b| b == b'h').unwrap();
        keyless[at - 1] = 1; // -1, zig-zag
        assert_eq!(check(&keyless, 3), Err("a header key"));
    }

    #[test]
    fn a_producers_offset_deltas_count_from_zero() {
        let body = three();
        assert_eq!(check(&body, 3), Ok(()));
        assert_eq!(check(&body, 2), Err("bytes past the last record"));
        assert_eq!(check(&body, 4), Err("a record's length"));
        let mut gap = body.clone();
        gap[3] = 5 << 1; // the first record's offset delta
        assert_eq!(check(&gap, 3), Err("offset deltas not 0, 1, 2…"));
        assert!(record_spans(&gap, 0, 0, 3).is_some(), "a stored batch's gaps are compaction's");
    }
}
