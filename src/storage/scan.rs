//! Walking a segment file's batches from the disk, for recovery and truncation: `scan` reads sound
//! batches on from a position, `resync` finds the first sound batch after damage.

use super::batch::{self, BatchInfo};
use shards::fs::ScanFile;

/// Chunk size for recovery scans.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// The position of the first sound batch at or after `from`, after damage: one whose header makes
/// sense, whose offsets fit where the damaged ones were (from `min_offset`, below `next_base`) and
/// whose CRC checks out. Looks at every byte position holding magic 2 where a header would (the
/// damage may have hit a length field).
pub fn resync(file: &ScanFile, from: u64, file_len: u64, min_offset: u64, next_base: Option<u64>) -> Option<u64> {
    const HEADER: u64 = batch::HEADER_BYTES as u64;
    let mut chunk = Vec::new();
    let mut chunk_at = from;
    let mut pos = from;
    while pos + HEADER <= file_len {
        if pos + HEADER > chunk_at + chunk.len() as u64 {
            chunk_at = pos;
            chunk.resize((file_len - pos).min(SCAN_CHUNK_BYTES as u64) as usize, 0);
            file.read_exact_at(&mut chunk, pos).ok()?;
        }
        let at = (pos - chunk_at) as usize;
        // The magic byte first: a search for it rules out almost every position (a 20 GiB run of
        // zeros took minutes one position at a time).
        match chunk[at + 16..].iter().position(|&b| b == 2) {
            Some(0) => {}
            Some(skip) => {
                pos += skip as u64;
                continue;
            }
            None => {
                pos = chunk_at + chunk.len() as u64 - 16;
                continue;
            }
        }
        if let Ok(info) = batch::header_info(&chunk[at..]) {
            let first = info.base_offset as u64;
            let fits = first >= min_offset && next_base.is_none_or(|n| first < n) && pos + info.bytes as u64 <= file_len;
            // Then what every batch written holds, before reading and checking the whole of one
            // that may claim the rest of the file: garbage passing the checks above made each such
            // read, and 32 MiB of it in a 258 MiB segment took 6 s.
            if fits && plausible(&info) {
                let mut whole = vec![0u8; info.bytes];
                if file.read_exact_at(&mut whole, pos).is_ok() && batch::validate_stored(&whole).is_ok() {
                    return Some(pos);
                }
            }
        }
        pos += 1;
    }
    None
}

/// Whether a header could be one Weir wrote: known attribute bits and codec, producer id and
/// epoch at least −1, and room for its records if they are not compressed (7 bytes at least each).
fn plausible(info: &BatchInfo) -> bool {
    let codec = info.attributes & batch::ATTR_CODEC_MASK;
    let uncompressed_room = codec != 0 || info.bytes as u64 >= batch::HEADER_BYTES as u64 + 7 * info.records_count as u64;
    info.attributes & !0x7f == 0 && codec <= 4 && info.producer_id >= -1 && info.producer_epoch >= -1 && uncompressed_room
}

/// Where the chain of plausible batch headers from `pos` ends: `file_len` when each header leads
/// to the next up to the file's end. Reads the headers only, not the records between them: a
/// closed segment's end is checked this way at every open, and a whole last batch (up to
/// max.message.bytes) read through the page cache would leave it there.
pub fn headers_end(file: &ScanFile, mut pos: u64, file_len: u64) -> u64 {
    let mut header = [0u8; batch::HEADER_BYTES];
    while pos < file_len {
        if pos + header.len() as u64 > file_len || file.read_exact_at(&mut header, pos).is_err() {
            return pos;
        }
        match batch::header_info(&header) {
            Ok(info) if plausible(&info) && pos + info.bytes as u64 <= file_len => pos += info.bytes as u64,
            _ => return pos,
        }
    }
    pos
}

/// Walks valid batches from `pos` until the first invalid byte, zero length or end of file.
/// Returns each batch's position and header, and where the valid bytes end.
pub fn scan(file: &ScanFile, mut pos: u64, file_len: u64) -> (Vec<(u64, BatchInfo)>, u64) {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut chunk_start = pos;
    loop {
        let in_chunk = (pos - chunk_start) as usize;
        let avail = chunk.len().saturating_sub(in_chunk);
        let need = match batch::framed_len(&chunk[in_chunk.min(chunk.len())..]) {
            Ok(n) => n,
            Err(batch::BatchError::Truncated { .. }) => batch::HEADER_BYTES,
            Err(_) => return (out, pos),
        };
        if avail < need {
            if pos + need as u64 > file_len {
                return (out, pos);
            }
            chunk.resize(need.max(SCAN_CHUNK_BYTES).min((file_len - pos) as usize), 0);
            if file.read_exact_at(&mut chunk, pos).is_err() {
                return (out, pos);
            }
            chunk_start = pos;
            continue;
        }
        match batch::validate_stored(&chunk[in_chunk..]) {
            Ok(info) => {
                out.push((pos, info));
                pos += info.bytes as u64;
            }
            Err(_) => return (out, pos),
        }
    }
}
