"""`make run` end to end: the real broker and every service as its own process,
replaying the bundled recordings, until predictions flow; then Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cryptovol.devtools.net import free_port, port_open
from cryptovol.devtools.stack import counter_total, discover

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_whole_pipeline_predicts_from_replayed_ticks_and_stops_cleanly():
    specs = discover(REPO)
    env = {**os.environ, "KAFKA_PORT": str(free_port()), "KAFKA_BOOTSTRAP_SERVERS": ""}
    proc = subprocess.Popen(  # free ports: other stacks or test runs may hold the usual ones
        [str(BIN / "cryptovol-stack"), "--source", "replay", "--status-every", "2",
         "--free-ports"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    try:
        # A bound, not a timing: the first scored row needs 30 minutes of replayed context
        # (about two minutes at 60x on a quiet machine, much longer on a loaded one).
        deadline = time.monotonic() + 480
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            match = re.search(r"predictions/s ([0-9.,]+)", line)
            if line.startswith("status:") and match and float(match.group(1).replace(",", "")) > 0:
                break
        else:
            pytest.fail("no predictions within 480 s:\n" + "\n".join(lines[-80:]))
        assert any(line.startswith("status:") for line in lines), "\n".join(lines[-40:])
        names = {s.name for s in specs}
        assert {f"{name} healthy" for name in names} <= set(lines)
        urls = dict(re.findall(r"^  (\w+) +metrics +(http://\S+)$", "\n".join(lines), re.M))
        ports = [int(re.search(r":(\d+)/", url).group(1)) for url in urls.values()]
        assert {"api", "consumer"} <= set(urls) and len(set(ports)) == len(ports), urls
        # the consumer first: every row it has recorded, the API had scored before
        predicted = counter_total(urls["consumer"], "cryptovol_consumer_predictions_total")
        scored = counter_total(urls["api"], "cryptovol_api_rows_scored_total")
        assert scored and predicted and scored >= predicted > 0
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(90)
    tail = proc.stdout.read() if proc.stdout else ""
    assert code == 0, tail[-3000:]
    assert "stopped: every process has exited" in tail
    assert not [p for p in ports if port_open(p)]
