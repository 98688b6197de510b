//! Kafka's four batch codecs on a batch's records section: the broker inflates batches to check a
//! producer's records, to find a record by timestamp and to recompress for `compression.type`;
//! weir-bench compresses its batches.
//!
//! Decompression is bounded: a client's 1 MiB of gzip could claim gigabytes, so output past
//! `INFLATED_BYTES_MAX` is an error, never an allocation. Snappy comes in two framings: librdkafka
//! writes raw snappy, Kafka's Java client xerial's block framing; both are read.

use std::io::{Read, Write};

/// Largest decompressed records section accepted (64 × Kafka's default `message.max.bytes`).
pub const INFLATED_BYTES_MAX: usize = 64 << 20;

/// xerial snappy-java's stream header: magic, then version and minimum compatible version.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

/// Kafka's codec ids, as in the batch attributes' low three bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl std::str::FromStr for Codec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" | "uncompressed" => Codec::None,
            "gzip" => Codec::Gzip,
            "snappy" => Codec::Snappy,
            "lz4" => Codec::Lz4,
            "zstd" => Codec::Zstd,
            other => return Err(format!("unknown codec {other} (none, gzip, snappy, lz4, zstd)")),
        })
    }
}

impl Codec {
    pub fn from_attributes(attributes: i16) -> Option<Codec> {
        [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd].into_iter().find(|c| *c as i16 == attributes & 0x7)
    }

    /// Compresses at each codec's fastest level (weir-bench's batches).
    pub fn compress(self, body: &[u8]) -> Vec<u8> {
        self.compress_level(body, 1)
    }

    /// Compresses; `gzip_level` is Kafka's `compression.gzip.level` (−1: zlib's default, 6). The
    /// other codecs here have one level each.
    pub fn compress_level(self, body: &[u8], gzip_level: i32) -> Vec<u8> {
        // Writes into a Vec cannot fail; the encoders' Results only carry I/O errors.
        match self {
            Codec::None => body.to_vec(),
            Codec::Gzip => {
                let level =
                    if gzip_level < 0 { flate2::Compression::default() } else { flate2::Compression::new(gzip_level.min(9) as u32) };
                let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
                let _ = e.write_all(body);
                e.finish().unwrap_or_default()
            }
            // Raw snappy, as librdkafka writes it (Kafka's readers take both framings).
            Codec::Snappy => snap::raw::Encoder::new().compress_vec(body).unwrap_or_default(),
            Codec::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                let _ = e.write_all(body);
                e.finish().unwrap_or_default()
            }
            Codec::Zstd => zstd::bulk::compress(body, 1).unwrap_or_default(),
        }
    }

    /// The records section inflated, at most `INFLATED_BYTES_MAX` bytes.
    pub fn decompress(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let bounded = |r: &mut dyn Read| -> std::io::Result<Vec<u8>> {
            let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(INFLATED_BYTES_MAX));
            r.take(INFLATED_BYTES_MAX as u64 + 1).read_to_end(&mut out)?;
            if out.len() > INFLATED_BYTES_MAX {
                return Err(too_large());
            }
            Ok(out)
        };
        match self {
            Codec::None => bounded(&mut &data[..]),
            Codec::Gzip => bounded(&mut flate2::read::GzDecoder::new(data)),
            Codec::Snappy if data.starts_with(XERIAL_MAGIC) => xerial_decompress(data),
            Codec::Snappy => {
                let mut out = Vec::new();
                snappy_raw_into(data, &mut out)?;
                Ok(out)
            }
            Codec::Lz4 => bounded(&mut lz4_flex::frame::FrameDecoder::new(data)),
            Codec::Zstd => bounded(&mut zstd::stream::read::Decoder::with_buffer(data)?),
        }
    }
}

fn too_large() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("records inflate past {INFLATED_BYTES_MAX} bytes"))
}

/// Appends one raw snappy block to `out`, checking its claimed length first.
fn snappy_raw_into(block: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    let len = snap::raw::decompress_len(block).map_err(std::io::Error::other)?;
    if out.len() + len > INFLATED_BYTES_MAX {
        return Err(too_large());
    }
    let at = out.len();
    out.resize(at + len, 0);
    snap::raw::Decoder::new().decompress(block, &mut out[at..]).map_err(std::io::Error::other)?;
    Ok(())
}

/// xerial framing: the 16-byte header, then blocks of `length i32 BE | raw snappy`.
fn xerial_decompress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "truncated xerial snappy block");
    let mut rest = data.get(XERIAL_HEADER_BYTES..).ok_or_else(bad)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = usize::try_from(i32::from_be_bytes(*len)).map_err(|_| bad())?;
        let block = tail.get(..len).ok_or_else(bad)?;
        snappy_raw_into(block, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Vec<u8> {
        (0..10_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    #[test]
    fn every_codec_round_trips() {
        for c in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let codec: Codec = c.parse().unwrap();
            let packed = codec.compress(&body());
            assert_eq!(codec.decompress(&packed).unwrap(), body(), "{c}");
            assert_eq!(Codec::from_attributes(codec as i16), Some(codec));
        }
    }

    #[test]
    fn reads_xerial_framed_snappy_as_javas_producer_writes_it() {
        let b = body();
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for part in b.chunks(7000) {
            let block = snap::raw::Encoder::new().compress_vec(part).unwrap();
            framed.extend_from_slice(&(block.len() as i32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        assert_eq!(Codec::Snappy.decompress(&framed).unwrap(), b);
        framed.pop();
        assert!(Codec::Snappy.decompress(&framed).is_err(), "a cut block is an error");
    }

    #[test]
    fn inflation_past_the_bound_is_an_error_not_an_allocation() {
        let zeros = vec![0u8; INFLATED_BYTES_MAX + 1];
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4] {
            let packed = codec.compress(&zeros);
            assert!(packed.len() < 4 << 20, "{codec:?} packs zeros small");
            assert!(codec.decompress(&packed).is_err(), "{codec:?}");
        }
    }
}
