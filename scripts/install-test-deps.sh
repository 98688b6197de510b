#!/usr/bin/env bash
# Installs the Kafka clients the black-box tests use, by package name, if they are missing:
# kcat, promtool and Chromium (Debian: kcat, prometheus, chromium), confluent-kafka + kafka-python + pytest + prometheus-client
# (PyPI), kafkajs and playwright-core (npm, exact versions in package.json).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "${missing[*]} missing and not root: the tests needing them will be skipped" >&2
    fi
fi
python3 - <<'PY' || python3 -m pip install -q --disable-pip-version-check confluent-kafka kafka-python pytest prometheus-client
import confluent_kafka, kafka, pytest, prometheus_client
PY
if command -v npm >/dev/null 2>&1; then
    [ -d tests/clients/kafkajs/node_modules/kafkajs ] || (cd tests/clients/kafkajs && npm install --no-audit --no-fund --no-package-lock --silent)
    [ -d tests/clients/dashboard/node_modules/playwright-core ] || (cd tests/clients/dashboard && npm install --no-audit --no-fund --no-package-lock --silent)
fi
