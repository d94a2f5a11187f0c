"""Typed events: pydantic models bound to Avro schemas in ``schemas/``.

A model names its schema with a class keyword; without one, the class name is looked up::

    class VideoUploaded(Event, schema="video.VideoUploaded"):
        video_id: str
        size_bytes: int

Binding (and the check that model and schema agree) happens once at startup, in
``pipeline.serde.SchemaCatalog.bind``, never per message.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Event(BaseModel):
    """Base class of every event model. Extra fields are rejected, so typos are not dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    __avro_schema__: ClassVar[str]

    def __init_subclass__(cls, schema: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if schema is not None:
            cls.__avro_schema__ = schema
        elif "__avro_schema__" not in cls.__dict__:
            cls.__avro_schema__ = cls.__name__
