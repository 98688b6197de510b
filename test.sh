#!/usr/bin/env bash
# The whole test suite: unit and property tests, then black-box tests of the real binary.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --release --workspace
