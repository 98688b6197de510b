//! A partition's checkpoints: small files of a few numbers that say how far something got, each
//! replaced durably (written to a temporary file, fsynced, renamed over the old one, directory
//! fsynced) so that a crash leaves the old value or the new one, never a mix.
//!
//! Layout: the values as u64 BE, then `crc32c(values) u32 BE | 0u32`. A missing or damaged file
//! reads as none; what that means is the caller's to say.
//!
//! * `log-start-offset` (one value): where DeleteRecords moved the partition's start, when that is
//!   past the first segment's base (Kafka's `log-start-offset-checkpoint`). None: the first
//!   segment's base.
//! * `recovery-point` (segment base, byte position): the active segment's bytes below this
//!   position were fsynced, so recovery validates only what follows (Kafka's
//!   `recovery-point-offset-checkpoint`). Closed segments are fsynced when sealed. None, or one of
//!   another segment: the whole active segment is validated.
//! * `high-watermark` (one value): a replicated partition's high watermark when its log was closed
//!   cleanly, for its next leader to start from (Kafka's `replication-offset-checkpoint`); read and
//!   removed when the log opens, so that a crash later leaves none (the high watermark then starts at
//!   the log start).
//! * `cleaner-offset` (one value): the log cleaner's first dirty offset: below it, every segment
//!   was cleaned with the keys of everything below it (Kafka's `cleaner-offset-checkpoint`). None:
//!   the log start (the next pass cleans everything again).

use super::batch::crc32c;
use std::path::Path;

pub const LOG_START: &str = "log-start-offset";
pub const RECOVERY_POINT: &str = "recovery-point";
pub const CLEANER_OFFSET: &str = "cleaner-offset";
pub const HIGH_WATERMARK: &str = "high-watermark";

/// The `N` values of checkpoint `name` in `dir`, if a sound file is there.
pub fn read<const N: usize>(dir: &Path, name: &str) -> Option<[u64; N]> {
    let bytes = shards::fs::read(&dir.join(name)).ok()?;
    if bytes.len() != N * 8 + 8 {
        return None;
    }
    let crc = u32::from_be_bytes(bytes[N * 8..N * 8 + 4].try_into().ok()?);
    if crc != crc32c(&bytes[..N * 8]) {
        tracing::warn!(dir = %dir.display(), checkpoint = name, "damaged checkpoint ignored");
        return None;
    }
    let mut values = [0u64; N];
    for (i, v) in values.iter_mut().enumerate() {
        *v = u64::from_be_bytes(bytes[i * 8..i * 8 + 8].try_into().ok()?);
    }
    Some(values)
}

/// Makes `values` checkpoint `name` in `dir`, durably.
pub async fn write(dir: &Path, name: &str, values: &[u64]) -> std::io::Result<()> {
    let mut bytes: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    let crc = crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes.extend_from_slice(&[0; 4]);
    shards::fs::write_durably(&dir.join(name), bytes).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_ignores_damage() {
        let dir = std::env::temp_dir().join(format!("weir-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(super::read::<1>(&dir, super::LOG_START), None);
        shards::run_local(super::write(&dir, super::LOG_START, &[12_345])).unwrap();
        assert_eq!(super::read::<1>(&dir, super::LOG_START), Some([12_345]));
        assert_eq!(super::read::<2>(&dir, super::LOG_START), None, "a checkpoint of another size");
        let path = dir.join(super::LOG_START);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(super::read::<1>(&dir, super::LOG_START), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
