"""A user's ``mypy --strict`` sees the real types of the public API, lazily loaded ones included.

``Publisher``, ``Pipeline``, ``Worker`` and ``Delivered`` load on first use (so a stage module
does not import the Kafka client); without ``TYPE_CHECKING`` imports a type checker saw them as
``object`` and the README's ``Publisher.connect()`` failed type checking.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pipeline

REPO = Path(pipeline.__file__).resolve().parent.parent

USER_MODULE = """
from pipeline import (
    Context, Delivered, DeliveryError, Event, Pipeline, Publisher, Settings, Stage, Topic, Worker,
    load_settings,
)


class UserRegistered(Event, schema="users.UserRegistered"):
    user_id: str
    email: str
    locale: str = "en"


REGISTERED = Topic("users.registered", UserRegistered, key="user_id")


class WelcomeEmail(Stage):
    consumes = REGISTERED

    async def handle(self, event: UserRegistered, ctx: Context) -> None:
        print(event.email, ctx)


publisher = Publisher.connect()          # as in the README


def register(user_id: str, email: str) -> Delivered | None:
    return publisher.publish(REGISTERED, UserRegistered(user_id=user_id, email=email))


async def register_async(user_id: str, email: str) -> None:
    await publisher.publish_async(REGISTERED, UserRegistered(user_id=user_id, email=email))


def on_delivery(result: Delivered | DeliveryError) -> None:
    if isinstance(result, Delivered):
        print(result.topic, result.partition, result.offset)


def run(settings: Settings) -> bool:
    app = Pipeline.build(settings, [WelcomeEmail])
    worker = Worker(app)
    worker.start()
    return worker.join(5.0)


run(load_settings())
"""

# Each line is wrong only if the name has its real type (as ``object`` or ``Any`` all pass).
MISUSES = """
from pipeline import Delivered, Publisher, Worker
count: int = Publisher.connect()
offset: str = Delivered(topic="t", partition=0, offset=1, event_id="e").offset
Worker("not a pipeline")
"""


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """One mypy run (about 10 s of CPU) over both modules; its error lines per module."""
    root = tmp_path_factory.mktemp("user-project")
    (root / "user_app.py").write_text(textwrap.dedent(USER_MODULE))
    (root / "misuse.py").write_text(textwrap.dedent(MISUSES))
    env = {**os.environ, "MYPYPATH": str(REPO)}
    command = [sys.executable, "-m", "mypy", "--strict", "--config-file", "", "--no-incremental"]
    command += ["user_app.py", "misuse.py"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    lines = result.stdout.splitlines()
    return {name: [ln for ln in lines if ln.startswith(name)] for name in ("user_app", "misuse")}


def test_a_user_module_passes_mypy_strict(mypy_output: dict[str, list[str]]) -> None:
    """The README's publisher usage, a stage, a pipeline and a worker type-check cleanly."""
    assert mypy_output["user_app"] == []


def test_the_lazy_names_carry_their_real_types(mypy_output: dict[str, list[str]]) -> None:
    """Misusing Publisher, Delivered or Worker is a type error, so none of them is object/Any."""
    errors = "\n".join(mypy_output["misuse"])
    assert '"Publisher", variable has type "int"' in errors
    assert 'expression has type "int", variable has type "str"' in errors
    assert 'Argument 1 to "Worker" has incompatible type "str"' in errors
