//! The partition log: Kafka v2 record batches in append-only segment files written with O_DIRECT
//! through the `shards` runtime. Knows batches as bytes, files and io_uring; nothing of sockets or
//! Kafka request types. See `docs/storage.md` for the byte layouts and recovery rules.

pub mod batch;
mod checkpoint;
pub mod compaction;
pub mod config;
pub mod control;
pub mod file_budget;
pub mod leader_epochs;
pub mod log;
pub mod producer_state;
pub mod read_cache;
pub mod scan;
pub mod segment;
pub mod truncate;
pub mod txn_index;

pub use self::config::{Cleanup, FlushPolicy, LogConfig};
pub use self::log::{Appended, Batches, Chunk, Log, LogError, Offsets, ReplicaEnd, Safe};

#[cfg(test)]
mod tests;
