#!/usr/bin/env bash
# Installs the Kafka clients the black-box tests use, by package name, if they are missing:
# kcat (Debian), confluent-kafka + kafka-python + pytest (PyPI), kafkajs (npm, exact version in package.json).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v kcat >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq kcat >/dev/null
    else
        echo "kcat missing and not root: kcat tests will be skipped" >&2
    fi
fi
python3 - <<'PY' || python3 -m pip install -q --disable-pip-version-check confluent-kafka kafka-python pytest
import confluent_kafka, kafka, pytest
PY
if command -v npm >/dev/null 2>&1 && [ ! -d tests/clients/kafkajs/node_modules/kafkajs ]; then
    (cd tests/clients/kafkajs && npm install --no-audit --no-fund --no-package-lock --silent)
fi
