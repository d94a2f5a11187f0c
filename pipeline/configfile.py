"""The TOML settings file, read by pydantic-settings' own ``TomlConfigSettingsSource``.

What the library source does not do, and this one adds:

- keys may sit at the top level or under a ``[pipeline]`` table (so the file can hold other
  tools' tables too); the library needs the table named up front, whether or not it is there;
- a key must be a setting's exact name: anything else is refused with a "did you mean" hint
  (the library would accept any capitalisation, or a field's aliases, and leave a real typo
  to pydantic's "Extra inputs are not permitted", which names no file);
- a setting the environment (or a keyword argument) sets replaces the file's value whole:
  pydantic-settings deep-merges dict settings across sources, which would mix a file's
  ``producer_config`` with the environment's instead of letting the environment win.

Which file is read is decided per ``load_settings`` call, through a context variable, because
pydantic-settings builds its sources in a classmethod that sees no call arguments; a
``Settings`` built directly reads no file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic_settings import BaseSettings, TomlConfigSettingsSource

from pipeline.errors import ConfigError

TABLE = "pipeline"
_IN_USE: ContextVar[Path | None] = ContextVar("pipeline_config_file", default=None)


@contextmanager
def reading(path: Path | None) -> Iterator[None]:
    """Settings built inside this block read ``path`` (none: no file)."""
    token = _IN_USE.set(path)
    try:
        yield
    finally:
        _IN_USE.reset(token)


def config_file_in_use() -> Path | None:
    return _IN_USE.get()


class PipelineToml(TomlConfigSettingsSource):
    """The lowest-ranked source after the defaults (see ``Settings.settings_customise_sources``).
    Raises ``ConfigError`` for an unknown key or a ``[pipeline]`` that is not a table, and lets
    ``tomllib.TOMLDecodeError`` through for ``load_settings`` to word."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        # Set first: the parent reads the file before it records settings_cls.
        self._path = path
        self._fields = settings_cls.model_fields
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        data = super()._read_file(file_path)
        table = data.get(TABLE, data)
        if not isinstance(table, dict):
            raise ConfigError(f"config file {self._path}: [{TABLE}] must be a table")
        fields = list(self._fields)
        for key in table:
            if key not in fields:
                match = difflib.get_close_matches(key.lower(), fields, n=1)
                hint = f" (did you mean {match[0]!r}?)" if match else ""
                raise ConfigError(f"config file {self._path}: unknown setting {key!r}{hint}")
        return dict(table)

    def __call__(self) -> dict[str, Any]:
        taken = self.current_state
        return {
            key: value
            for key, value in super().__call__().items()
            if not any(name in taken for name in self._names(key))
        }

    def _names(self, key: str) -> set[str]:
        """Every name a higher source may have put a field under: its own, and its aliases
        (``KAFKA_BOOTSTRAP_SERVERS`` arrives lower-cased from the environment)."""
        names = {key}
        for field_name, info in self._fields.items():
            aliases = info.validation_alias
            choices = aliases.choices if isinstance(aliases, AliasChoices) else [aliases]
            found = {str(c) for c in choices if isinstance(c, str)}
            if key == field_name or key in found:
                names |= {field_name} | found | {c.lower() for c in found}
        return names
