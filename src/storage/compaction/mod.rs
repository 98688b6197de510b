//! Log compaction (`cleanup.policy=compact`, Kafka's log cleaner): the latest record of each key is
//! kept, older ones removed, kept records keep their offsets. `offset_map` holds each key's latest
//! offset in bounded memory; `filter` rewrites one batch with the records that stay; `clean` is one
//! pass over batches with Kafka's rules; `throttle` is the cleaner's I/O budget. The pass over a
//! log's segment files is `log::compact`.

pub mod clean;
pub mod filter;
pub mod offset_map;
pub mod throttle;
