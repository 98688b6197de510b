#!/usr/bin/env bash
# The whole test suite: unit and property tests, then black-box tests of the real release binary
# driven by real Kafka clients (librdkafka via confluent-kafka and kcat, kafka-python, kafkajs).
# Installs the clients it needs by package name (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -q -- -D warnings
cargo build --release
cargo test --release --workspace
python3 -m pytest -q -p no:cacheprovider tests/clients
