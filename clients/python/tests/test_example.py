"""The README's Python example runs as printed, against the same namespace layout `make run` creates."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO

EXAMPLE = REPO / "examples" / "python" / "claim_sandbox.py"


def test_readme_shows_the_example_verbatim() -> None:
    readme = (REPO / "README.md").read_text()
    assert EXAMPLE.read_text() in readme, "README's Python example differs from examples/python/claim_sandbox.py"


def test_example_prints_a_warm_pod_ip_and_latency(namespace: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env={**os.environ, "SANDBOX_NAMESPACE": namespace},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    assert re.search(r": warm sandbox on Pod aio-pool-\S+, IP \d+\.\d+\.\d+\.\d+\n", done.stdout), done.stdout
    assert re.search(r"Ready \d+\.\d ms after the API server admitted the claim", done.stdout), done.stdout
