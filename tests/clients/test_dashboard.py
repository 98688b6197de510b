"""The dashboard in a real browser (Debian's Chromium, driven by playwright-core): it loads with
no console error and no request outside the broker, and its records-in curve grows and moves while
weir-bench produces."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import WEIR, unique

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "dashboard")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def figure(text):
    """The number in a legend entry like `records in/s: 1.83M`."""
    value = text.rsplit(":", 1)[1].strip()
    scale = {"k": 1e3, "M": 1e6}.get(value[-1], 1)
    return float(value.rstrip("kM")) * scale


def test_dashboard_draws_live_curves(broker):
    if not os.path.exists(CHROMIUM) or shutil.which("node") is None:
        pytest.skip("Chromium or Node.js not installed (Debian package chromium; node)")
    if not os.path.isdir(os.path.join(DRIVER, "node_modules", "playwright-core")):
        pytest.skip("playwright-core not installed (npm install in tests/clients/dashboard)")
    bench = subprocess.Popen(
        [WEIR + "-bench", "produce", "--bootstrap", broker.bootstrap, "--topic", unique("dash"), "--msg-size", "100",
         "--duration", "60s", "--rate", "200000", "--no-pin"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = subprocess.run(["node", os.path.join(DRIVER, "dashboard.js"), f"http://127.0.0.1:{broker.metrics_port}/"],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "CHROMIUM": CHROMIUM})
    finally:
        bench.kill()
        bench.wait()
    assert r.returncode == 0, r.stdout + r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["errors"] == [] and seen["external"] == [], seen
    first, second = seen["first"], seen["second"]
    assert len(first["points"]) >= 2, first
    assert len(second["points"]) > len(first["points"]), "a point every 2 s while the page is open"
    assert second["points"] != first["points"]
    assert figure(second["legend"]) > 10_000, second["legend"]
    assert figure(second["latency"].split("p99")[0]) > 0, second["latency"]
