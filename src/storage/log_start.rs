//! The log start offset checkpoint: where DeleteRecords moved a partition's start, when that is
//! past the first segment's base (Kafka's `log-start-offset-checkpoint`, one file per partition).
//!
//! Layout: `<partition dir>/log-start-offset`, 16 bytes: `offset u64 BE | crc32c(offset) u32 BE |
//! 0u32`. Written to a temporary file, fsynced, renamed over the old one, directory fsynced: a crash
//! leaves the old value or the new one. A missing or damaged file means "the first segment's base".

use super::batch::crc32c;
use std::path::Path;

const FILE_NAME: &str = "log-start-offset";
const BYTES: usize = 16;

/// The checkpointed start, if a sound one is there.
pub fn read(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join(FILE_NAME)).ok()?;
    let bytes: [u8; BYTES] = bytes.try_into().ok()?;
    let offset = u64::from_be_bytes(bytes[0..8].try_into().ok()?);
    let crc = u32::from_be_bytes(bytes[8..12].try_into().ok()?);
    if crc != crc32c(&bytes[0..8]) {
        tracing::warn!(dir = %dir.display(), "damaged log start checkpoint ignored");
        return None;
    }
    Some(offset)
}

/// Makes `offset` the durable start of the partition in `dir`.
pub fn write(dir: &Path, offset: u64) -> std::io::Result<()> {
    let mut bytes = [0u8; BYTES];
    bytes[0..8].copy_from_slice(&offset.to_be_bytes());
    let crc = crc32c(&bytes[0..8]);
    bytes[8..12].copy_from_slice(&crc.to_be_bytes());
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(FILE_NAME))?;
    super::segment::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_ignores_damage() {
        let dir = std::env::temp_dir().join(format!("weir-log-start-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(super::read(&dir), None);
        super::write(&dir, 12_345).unwrap();
        assert_eq!(super::read(&dir), Some(12_345));
        let path = dir.join(super::FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(super::read(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
