//! Log compaction (`cleanup.policy=compact`, Kafka's log cleaner): the latest record of each key is
//! kept, older ones removed, kept records keep their offsets. `offset_map` holds each key's latest
//! offset in bounded memory; `filter` rewrites one batch with the records that stay.

pub mod filter;
pub mod offset_map;
