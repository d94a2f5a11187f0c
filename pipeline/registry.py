"""Finding stages in modules, and checking every declaration against the schemas at startup.

Registration is explicit: a module lists its stages in ``STAGES``. ``pipeline run stages.video``
imports ``stages.video`` and runs ``STAGES``; ``stages.video:Transcode`` picks one stage;
several specs may be comma separated. A module may list ``HOOKS`` too (``pipeline.hooks``):
the Pipeline-level hooks of a ``pipeline run``.

``plan`` turns stage classes into ``StagePlan``s, collecting every problem it finds (a topic
whose model has no schema, a model that disagrees with its schema, two stages in one group, a
handler annotated with the wrong event type) into one ``DeclarationError``, so a user fixes
them all in one go instead of one per restart.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
import pkgutil
import sys
import traceback
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Settings
from pipeline.deadletter import dlq_topic
from pipeline.errors import DeclarationError, DuplicateGroupError, PipelineError, SchemaError
from pipeline.events import Event
from pipeline.hooks import Hook, check
from pipeline.lanes import lane_group, lane_topic
from pipeline.ratelimit import deferral_name
from pipeline.retrytopics import topic_name as retry_topic
from pipeline.serde import Binding, SchemaCatalog
from pipeline.stage import Stage, Topic, deferred_field_checks

log = logging.getLogger("pipeline.registry")
STAGES_ATTR = "STAGES"
HOOKS_ATTR = "HOOKS"


@dataclass(frozen=True, slots=True)
class StagePlan:
    """A validated stage with physical topic names (prefix applied) and schema bindings."""

    stage: type[Stage]
    name: str
    group: str
    inputs: dict[str, Binding]  # physical topic -> binding
    outputs: dict[str, tuple[str, Binding]]  # logical topic -> (physical topic, binding)
    dlq_topic: str
    retry_topics: tuple[str, ...] = ()  # one per RetryPolicy tier, in tier order
    # Priority lanes (``pipeline.lanes``): the input topics of lane 1, lane 2, ... (lane 0 is
    # every other input); ``inputs`` holds them all too.
    lanes: tuple[tuple[str, ...], ...] = ()
    output_lanes: tuple[str, ...] = ()  # the lane topics (below lane 0) of its outputs
    # Models its input topics declare as ``replies``: what ``ctx.reply`` may send.
    replies: dict[type[Event], Binding] = field(default_factory=dict)

    @property
    def subscriptions(self) -> list[str]:
        """What the stage's consumers read: its inputs and its own retry topics."""
        return [*self.inputs, *self.retry_topics]

    @property
    def topics(self) -> list[str]:
        """Every topic this stage reads or writes, for creation at startup."""
        outputs = (phys for phys, _ in self.outputs.values())
        return [*self.inputs, *outputs, *self.output_lanes, *self.retry_topics, self.dlq_topic]

    @property
    def lane_readers(self) -> list[tuple[str, list[str]]]:
        """(group, input topics) of each lane, lane 0 first: lane 0 in the stage's group,
        lane k in ``<group>.p<k>`` (``pipeline.lanes``)."""
        lower = {t for lane in self.lanes for t in lane}
        out = [(self.group, [t for t in self.inputs if t not in lower])]
        return out + [(lane_group(self.group, k), list(ts)) for k, ts in enumerate(self.lanes, 1)]

    @property
    def readers(self) -> list[tuple[str, list[str]]]:
        """(group, topics) of every consumer the stage reads with, as ``Pipeline.runner``
        makes them: retry topics in ``<group>.retry``, then the lanes (``lane_readers``); an
        exactly-once stage (never with lanes) reads inputs and retries with one consumer."""
        if self.stage.guarantee == "exactly_once" or not (self.retry_topics or self.lanes):
            return [(self.group, self.subscriptions)]
        retry = [(f"{self.group}.retry", list(self.retry_topics))] if self.retry_topics else []
        return retry + self.lane_readers


def load(spec: str) -> list[type[Stage]]:
    stages: list[type[Stage]] = []
    for part in _parts(spec):
        named = module_spec(part)
        if named != part:
            log.info("%s is a file: running it as %s (name modules as with python -m)", part, named)
        stages.extend(_load_one(named))
    if not stages:
        raise DeclarationError(f"{spec!r} names no stages")
    return list(dict.fromkeys(stages))


def load_hooks(spec: str) -> list[Hook]:
    """The ``HOOKS`` lists of the modules ``spec`` names (imported already by ``load``), in
    order, each hook once."""
    hooks: list[Hook] = []
    for part in _parts(spec):
        module_name = module_spec(part).partition(":")[0]
        listed = getattr(_import(module_name), HOOKS_ATTR, ())
        for hook in check(listed, f"{module_name}.{HOOKS_ATTR}"):
            if all(hook is not h for h in hooks):
                hooks.append(hook)
    return hooks


def _parts(spec: str) -> list[str]:
    return [p.strip() for p in spec.split(",") if p.strip()]


def module_spec(part: str) -> str:
    """``stages/images.py[:Stage]`` as ``stages.images[:Stage]``: what users type after
    tab-completing a file, taken relative to the current directory, as ``python -m`` would.
    A module name is returned as it is."""
    where, colon, attr = part.partition(":")
    if not (where.endswith(".py") or "/" in where or os.sep in where):
        return part
    path = Path(where)
    path = path.with_suffix("") if path.suffix == ".py" else path
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            raise DeclarationError(
                f"{where} is outside the current directory: run from the directory that "
                "holds its package, or name the module (stages.images)"
            ) from None
    names = [p for p in path.parts if p not in ("", ".")]
    if names and names[-1] == "__init__":
        names.pop()
    if not names or ".." in names or not all(n.isidentifier() for n in names):
        raise DeclarationError(f"{where!r} is neither a module name nor a stage file")
    return ".".join(names) + colon + attr


def _load_one(spec: str) -> list[type[Stage]]:
    module_name, _, attr = spec.partition(":")
    module = _import(module_name)
    if attr:
        stage = getattr(module, attr, None)
        if not (isinstance(stage, type) and issubclass(stage, Stage)):
            raise DeclarationError(
                f"{module_name} has no stage class {attr!r}{_stage_hint(module, attr)}"
            )
        return [stage]
    listed = getattr(module, STAGES_ATTR, None)
    if listed is None:
        found = [n for n, v in vars(module).items() if _is_stage(v) and v.__module__ == module_name]
        hint = f" (it defines {', '.join(found)})" if found else ""
        raise DeclarationError(f"module {module_name} has no {STAGES_ATTR} list{hint}")
    bad = [repr(s) for s in listed if not _is_stage(s)]
    if bad:
        raise DeclarationError(f"{module_name}.{STAGES_ATTR} holds non-stages: {', '.join(bad)}")
    return list(listed)


def _stage_hint(module: types.ModuleType, attr: str) -> str:
    found = [n for n, v in vars(module).items() if _is_stage(v)]
    close = difflib.get_close_matches(attr, found, n=1)
    if close:
        return f" (did you mean {module.__name__}:{close[0]}?)"
    return f" (its stages: {', '.join(found)})" if found else ""


def _is_stage(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, Stage) and value is not Stage


def plan(
    stages: Iterable[type[Stage]], catalog: SchemaCatalog, settings: Settings
) -> list[StagePlan]:
    stages = list(stages)
    problems: list[str] = []
    bindings = _bind_topics(stages, catalog, problems)
    plans = []
    groups: dict[str, type[Stage]] = {}
    for stage in stages:
        group = settings.topic(stage.group_id())
        if group in groups:
            other = groups[group]
            problems.append(
                f"stages {other.__qualname__} and {stage.__qualname__} share group {group!r}; "
                "set `group = ...` on one of them (a group is one stage's identity)"
            )
        groups[group] = stage
        problems.extend(_check_annotation(stage))
        if any(t.name not in bindings for t in (*stage.input_topics(), *stage.emits)):
            continue
        lanes = _input_lanes(stage, settings)
        plans.append(
            StagePlan(
                stage=stage,
                name=stage.stage_name(),
                group=group,
                inputs=_inputs(stage, bindings, settings)
                | {phys: bindings[t.name] for lane in lanes for t, phys in lane},
                outputs={t.name: (settings.topic(t.name), bindings[t.name]) for t in stage.emits},
                dlq_topic=dlq_topic(group),
                retry_topics=tuple(retry_topic(group, t) for t in stage.retry.tiers)
                if stage.retry.uses_retry_topics
                else (),
                lanes=tuple(tuple(phys for _, phys in lane) for lane in lanes),
                output_lanes=tuple(p for lane in _lanes(stage.emits, settings) for _, p in lane),
                replies=_bind_replies(stage, catalog, problems),
            )
        )
    if problems:
        kind = (
            DuplicateGroupError if all("share group" in p for p in problems) else DeclarationError
        )
        raise kind("invalid stage declarations:\n  - " + "\n  - ".join(problems))
    return plans


def _lanes(
    topics: Iterable[Topic], settings: Settings
) -> list[list[tuple[Topic, str]]]:
    """(topic, physical lane topic) of lane 1, lane 2, ... of ``topics``."""
    topics = list(topics)
    count = max((t.lanes for t in topics), default=1)
    return [
        [(t, lane_topic(settings.topic(t.name), k)) for t in topics if k < t.lanes]
        for k in range(1, count)
    ]


def _input_lanes(stage: type[Stage], settings: Settings) -> list[list[tuple[Topic, str]]]:
    """The lanes of the stage's inputs; with a per-key rate limit, each lane's deferral topic
    too (``pipeline.keylimit``), so a deferred record comes back on its own lane."""
    lanes = _lanes(stage.input_topics(), settings)
    limit = stage.rate_limit
    if limit is not None and limit.keyed:
        deferral = settings.topic(deferral_name(stage.group_id()))
        for k, lane in enumerate(lanes, 1):
            lane.append((lane[0][0], lane_topic(deferral, k)))
    return lanes


def _inputs(
    stage: type[Stage], bindings: dict[str, Binding], settings: Settings
) -> dict[str, Binding]:
    """Physical input topics and their bindings; a stage with a per-key rate limit reads its
    deferral topic too (``pipeline.keylimit``), records of its one input topic."""
    inputs = {settings.topic(t.name): bindings[t.name] for t in stage.input_topics()}
    limit = stage.rate_limit
    if limit is not None and limit.keyed:
        [binding] = inputs.values()  # one input topic: checked at declaration
        inputs[settings.topic(deferral_name(stage.group_id()))] = binding
    return inputs


def _bind_replies(
    stage: type[Stage], catalog: SchemaCatalog, problems: list[str]
) -> dict[type[Event], Binding]:
    replies = {}
    for topic in stage.input_topics():
        if topic.replies is not None and topic.replies not in replies:
            try:
                replies[topic.replies] = catalog.bind(topic.replies)
            except SchemaError as exc:
                problems.append(f"topic {topic.name!r} replies: {exc}")
    return replies


def _bind_topics(
    stages: list[type[Stage]], catalog: SchemaCatalog, problems: list[str]
) -> dict[str, Binding]:
    topics: dict[str, Topic] = {}
    for stage in stages:
        for topic in (*stage.input_topics(), *stage.emits):
            seen = topics.setdefault(topic.name, topic)
            if seen.model is not topic.model:
                problems.append(
                    f"topic {topic.name!r} is declared with two models: "
                    f"{seen.model.__name__} and {topic.model.__name__}"
                )
            elif seen.levels != topic.levels:
                problems.append(f"topic {topic.name!r} is declared with two sets of priorities")
    for topic in topics.values():
        problems.extend(topic.problems)
        problems.extend(
            f"topic {topic.name!r}: its lane {k} is topic {lane!r}, which is declared too"
            for k in range(1, topic.lanes)
            if (lane := lane_topic(topic.name, k)) in topics
        )
    bindings = {}
    for name, topic in topics.items():
        try:
            bindings[name] = catalog.bind(topic.model)
        except SchemaError as exc:
            problems.append(f"topic {name!r}: {exc}")
    return bindings


def _check_annotation(stage: type[Stage]) -> list[str]:
    """If the handler annotates its event parameter, it must accept every input model."""
    try:
        hints = typing.get_type_hints(stage.handle)
    except Exception:  # unresolvable forward refs: nothing to check against
        return []
    params = list(inspect.signature(stage.handle).parameters)
    annotation = hints.get(params[1]) if len(params) > 1 else None
    if annotation is None or annotation is typing.Any:
        return []
    accepted = typing.get_args(annotation) or (annotation,)
    wrong = [
        t.model.__name__
        for t in stage.input_topics()
        if not any(isinstance(a, type) and issubclass(t.model, a) for a in accepted)
    ]
    if wrong:
        return [
            f"stage {stage.__qualname__}: handle() takes {annotation!r} but its input topics "
            f"carry {', '.join(wrong)}"
        ]
    return []


def discover_topics(spec: str) -> dict[str, Topic]:
    """Every Topic declared in the given modules or packages (module-level constants and the
    consumes/emits of their stages), by logical name. Used by ``pipeline publish``."""
    found: dict[str, Topic] = {}
    for name in _parts(spec):
        for module in _modules(name):
            for value in vars(module).values():
                for topic in _topics_of(value):
                    found.setdefault(topic.name, topic)
    return found


def discover_stages(spec: str) -> list[type[Stage]]:
    """The stages a ``pipeline run`` spec names; a package without ``STAGES`` of its own
    stands for the ``STAGES`` of its modules (``stages`` for ``stages.video`` and
    ``stages.orders``). Used by ``pipeline status``."""
    found: list[type[Stage]] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        module = _import(part.partition(":")[0])
        if ":" in part or hasattr(module, STAGES_ATTR) or not hasattr(module, "__path__"):
            found.extend(_load_one(part))
            continue
        for sub in _modules(part)[1:]:
            found.extend(getattr(sub, STAGES_ATTR, ()))
    if not found:
        raise DeclarationError(f"{spec!r} names no stages")
    return list(dict.fromkeys(found))


def _topics_of(value: object) -> tuple[Topic, ...]:
    if isinstance(value, Topic):
        return (value,)
    if _is_stage(value) and hasattr(value, "consumes"):
        stage = typing.cast(type[Stage], value)
        return (*stage.input_topics(), *stage.emits)
    return ()


def _import(name: str) -> types.ModuleType:
    """Import a user module. Whatever stops the import (a syntax error, a missing dependency,
    an exception at module level) becomes one DeclarationError naming the file and line."""
    try:
        with deferred_field_checks():
            return importlib.import_module(name)
    except PipelineError:
        raise  # ours already says what is wrong (a stage declaration, say)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            hint = _module_hint(exc.name, name)
            raise DeclarationError(f"no module named {name!r}{hint}") from None
        raise DeclarationError(f"cannot import {name}: {_where(exc)}{exc}") from None
    except SyntaxError as exc:  # IndentationError too
        where = f"{exc.filename}, line {exc.lineno}: " if exc.filename else ""
        raise DeclarationError(f"cannot import {name}: {where}{exc.msg}") from None
    except Exception as exc:
        raise DeclarationError(
            f"cannot import {name}: {_where(exc)}{type(exc).__name__}: {exc}"
        ) from None


def _module_hint(missing: str, name: str) -> str:
    """``name`` with its first missing part (``missing``) replaced by a close match among its
    siblings: the modules of its package, or the top-level ones in the current directory."""
    parent, _, _ = missing.rpartition(".")
    package = sys.modules.get(parent) if parent else None
    paths = list(getattr(package, "__path__", [])) if parent else [os.getcwd()]
    prefix = f"{parent}." if parent else ""
    siblings = [prefix + m.name for m in pkgutil.iter_modules(paths)]
    close = difflib.get_close_matches(missing, siblings, n=1)
    return f" (did you mean {close[0] + name[len(missing) :]!r}?)" if close else ""


def _where(exc: BaseException) -> str:
    """'file, line N: ' of the innermost frame outside the import machinery, or ''."""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")
    ]
    return f"{frames[-1].filename}, line {frames[-1].lineno}: " if frames else ""


def _modules(name: str) -> list[types.ModuleType]:
    name = module_spec(name)
    module = _import(name)
    modules = [module]
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        modules.append(_import(f"{name}.{info.name}"))
    return modules
