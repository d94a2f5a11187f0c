"""The README's hook example, run as written: the code block after ``<!-- hooks-example -->``."""

from __future__ import annotations

from typing import Any

from pipeline import Settings
from pipeline.testing import TestPipeline
from tests.conftest import ROOT, TEST_SCHEMAS
from tests.integration.app_stages import PINGS, Ping
from tests.unit.test_hooks import Answer, Flaky


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


def test_the_readme_lifecycle_hook_tells_the_admin_only_of_final_failures() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- lifecycle-example -->", 1)[1].split("```python\n", 1)[1]
    namespace: dict[str, Any] = {}
    exec(compile(block.split("```", 1)[0], "README.md", "exec"), namespace)
    hook = namespace["TellAdminOnFinalFailure"]()
    settings = Settings(schemas_dir=TEST_SCHEMAS)
    Flaky.calls = 0
    with TestPipeline([Answer, Flaky], settings, hooks=[hook]) as t:
        poison = t.publish(PINGS, Ping(ping_id="poison", n=0), key="k")
        t.publish(PINGS, Ping(ping_id="fine", n=1), key="k")
        t.run_until_idle()
        assert t.stats(Flaky).retried == 1, "Flaky's first failure is retried: not told"
    told = []
    while not namespace["to_admin"].empty():
        told.append(namespace["to_admin"].get())
    where = f"{poison.topic}[{poison.partition}]@{poison.offset}"
    assert told == [f"answer: {where} failed for good after 1 attempt(s): ValueError"]
