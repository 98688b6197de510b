//! Weir: a Kafka-compatible message broker, thread-per-core on io_uring.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod bench;
pub mod broker;
pub mod client;
pub mod log_levels;
pub mod metrics;
pub mod protocol;
pub mod storage;
