//! weir-bench's batch compression: Kafka's four codecs on a batch's records section. Batches are
//! compressed once up front (or once per batch in e2e mode, where values carry send stamps).

use std::io::{Read, Write};

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
            "none" => Codec::None,
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

    pub fn compress(self, body: &[u8]) -> Vec<u8> {
        match self {
            Codec::None => body.to_vec(),
            Codec::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(body).expect("in-memory write");
                e.finish().expect("in-memory write")
            }
            // Raw snappy, as librdkafka writes it.
            Codec::Snappy => snap::raw::Encoder::new().compress_vec(body).expect("snappy input under 4 GiB"),
            Codec::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(body).expect("in-memory write");
                e.finish().expect("in-memory write")
            }
            Codec::Zstd => ruzstd::encoding::compress_to_vec(body, ruzstd::encoding::CompressionLevel::Fastest),
        }
    }

    pub fn decompress(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len() * 4);
        match self {
            Codec::None => out.extend_from_slice(data),
            Codec::Gzip => {
                flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
            }
            Codec::Snappy => out = snap::raw::Decoder::new().decompress_vec(data).map_err(std::io::Error::other)?,
            Codec::Lz4 => {
                lz4_flex::frame::FrameDecoder::new(data).read_to_end(&mut out)?;
            }
            Codec::Zstd => {
                let mut source = data;
                ruzstd::decoding::StreamingDecoder::new(&mut source).map_err(std::io::Error::other)?.read_to_end(&mut out)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let body: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for c in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let codec: Codec = c.parse().unwrap();
            let packed = codec.compress(&body);
            assert_eq!(codec.decompress(&packed).unwrap(), body, "{c}");
            assert_eq!(Codec::from_attributes(codec as i16), Some(codec));
        }
    }
}
