"""The README's hook example, run as written: the code block after ``<!-- hooks-example -->``."""

from __future__ import annotations

from typing import Any

from pipeline import Settings
from pipeline.testing import TestPipeline
from tests.conftest import ROOT, TEST_SCHEMAS
from tests.integration.app_stages import PINGS, Ping
from tests.unit.test_hooks import Answer


def _example() -> dict[str, Any]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- hooks-example -->", 1)[1].split("```python\n", 1)[1]
    namespace: dict[str, Any] = {}
    exec(compile(block.split("```", 1)[0], "README.md", "exec"), namespace)
    return namespace


def test_the_readme_hook_counts_dead_letters_per_error_type() -> None:
    counter = _example()["DeadLettersByError"]()
    settings = Settings(schemas_dir=TEST_SCHEMAS)
    with TestPipeline([Answer], settings, hooks=[counter]) as t:
        for n in range(3):
            t.publish(PINGS, Ping(ping_id="poison", n=n), key="k")
        t.publish(PINGS, Ping(ping_id="fine", n=9), key="k")
        t.run_until_idle()
    assert counter.counts == {("answer", "ValueError"): 3}
