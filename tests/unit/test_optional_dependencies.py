"""Optional dependencies say which extra to install when a setting needs one."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
sys.modules['psycopg'] = None  # as if installed without the [postgres] extra
from pipeline.idempotency.urls import open_store
try:
    open_store('postgresql://app:hunter2@db:5432/app')
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_a_postgres_url_without_psycopg_names_the_postgres_extra() -> None:
    """A postgresql:// store without psycopg is a ConfigError naming the extra, password hidden."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.startswith("ConfigError idempotency store ")
    assert "pip install 'kafka-pipeline[postgres]'" in out
    assert "hunter2" not in out
