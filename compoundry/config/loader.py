"""Load ``configs/*.yaml`` and report every problem as ``file:line: field: message``.

ruamel.yaml's round-trip loader keeps the line of every mapping key and list
item, so each pydantic error ``loc`` (and each cross-file finding) is mapped
back to the line a person has to edit. All issues of all files are collected
before one :class:`ConfigError` is raised: fixing a config should take one run,
not one run per typo. See ``docs/decisions/0002-config-yaml-errors.md``.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from compoundry.config.base import DEFAULT_CONFIG_DIR
from compoundry.config.models import FILE_MODELS, Config
from compoundry.core.dag import (
    ancestors,
    find_cycle,
    iter_template_strings,
    referenced_step,
    template_expressions,
)

#: Files ``load_config`` reads; all but components.yaml may be absent (then empty / defaults).
REQUIRED_FILES = ("components",)

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: where (file, 1-based line, dotted field path) and what."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}"


class ConfigError(Exception):
    """Raised with every issue found; ``str()`` gives one ``file:line: field: message`` per line."""

    def __init__(self, issues: Sequence[ConfigIssue]):
        self.issues = list(issues)
        super().__init__(self.issues)  # args = (issues,): survives pickling (Prefect, multiprocessing)

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


def display_path(path: Path) -> str:
    """The path relative to the working directory when it lies below it (shorter, clickable)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def render_field(loc: Loc) -> str:
    """``('pipelines', 'a', 'steps', 0)`` -> ``pipelines.a.steps[0]``; pydantic's ``[key]`` marker is dropped."""
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


class Source:
    """One parsed YAML file: its round-trip tree answers 'which line is this key on?'."""

    def __init__(self, path: Path, tree: Any = None):
        self.path = path
        self.name = display_path(path)
        self.tree = tree

    def line_of(self, loc: Loc) -> int | None:
        """Line of the deepest key/item of ``loc`` present in the file (a missing key -> its parent's)."""
        node, line = self.tree, (1 if self.tree is not None else None)
        for part in loc:
            if part == "[key]":
                continue
            if isinstance(node, CommentedMap) and part in node:
                line, node = node.lc.key(part)[0] + 1, node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                line, node = node.lc.item(part)[0] + 1, node[part]
            else:
                break
        return line

    def issue(self, loc: Loc, message: str, field: Loc | None = None) -> ConfigIssue:
        """An issue located at ``loc``'s line, named by ``field`` (default: ``loc``)."""
        return ConfigIssue(self.name, self.line_of(loc), render_field(loc if field is None else field), message)


def _plain(node: Any) -> Any:
    """ruamel's commented containers and scalar subclasses -> plain JSON-like Python values."""
    if isinstance(node, Mapping):
        return {_plain(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


def _parse(path: Path) -> tuple[Source, list[ConfigIssue]]:
    source = Source(path)
    if not path.is_file():
        return source, [ConfigIssue(source.name, None, "(file)", "file not found")]
    try:
        text = path.read_text(encoding="utf-8")
        tree = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        return source, [ConfigIssue(source.name, line, "(yaml)", f"invalid YAML: {problem}")]
    except (OSError, UnicodeDecodeError) as exc:
        return source, [ConfigIssue(source.name, None, "(file)", f"cannot read: {exc}")]
    source.tree = CommentedMap() if tree is None else tree
    return source, []


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The pydantic model class that validates the value at ``loc`` (to list its allowed keys)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif origin in (dict, Mapping):
            tp = typing.get_args(tp)[1]
        elif origin in (list, tuple, Sequence):
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _message(model: type[BaseModel], err: dict) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        owner = _model_at(model, tuple(err["loc"][:-1]))
        allowed = f" (allowed: {', '.join(owner.model_fields)})" if owner else ""
        return f"unknown key{allowed}"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind in ("literal_error", "enum"):
        return f"{msg}, got {err['input']!r}"
    return msg


def _validate(source: Source, model: type[BaseModel]) -> tuple[BaseModel | None, list[ConfigIssue]]:
    try:
        return model.model_validate(_plain(source.tree)), []
    except ValidationError as exc:
        return None, [source.issue(tuple(e["loc"]), _message(model, e)) for e in exc.errors()]


def load_model_file(path: Path, model: type[BaseModel]) -> BaseModel:
    """Parse one YAML file and validate it as ``model``; raise :class:`ConfigError` with file:line issues."""
    source, issues = _parse(Path(path))
    if issues:
        raise ConfigError(issues)
    instance, issues = _validate(source, model)
    if issues:
        raise ConfigError(issues)
    return instance


def load_config(config_dir: Path | str | None = None) -> Config:
    """Load and cross-validate every file of a config directory.

    The directory is ``config_dir``, else ``$COMPOUNDRY_CONFIG_DIR``, else the
    repository's ``configs/``. Raises one :class:`ConfigError` holding all issues.
    """
    directory = Path(config_dir or os.environ.get("COMPOUNDRY_CONFIG_DIR") or DEFAULT_CONFIG_DIR)
    issues: list[ConfigIssue] = []
    sources: dict[str, Source] = {}
    values: dict[str, Any] = {}  # stem -> validated content (only the valid entries of a broken file)
    names: dict[str, list[str]] = {}  # stem -> every entry name written, valid or not
    for stem, (model, key) in FILE_MODELS.items():
        path = directory / f"{stem}.yaml"
        if stem not in REQUIRED_FILES and not path.exists():
            instance = model()
        else:
            source, found = _parse(path)
            sources[stem] = source
            instance = None
            if not found:
                instance, found = _validate(source, model)
            issues += found
        if key is None:
            if instance is not None:
                values[stem] = instance
        elif instance is not None:
            values[stem] = getattr(instance, key)
            names[stem] = list(values[stem])
        elif (partial := _valid_entries(sources[stem], model, key)) is not None:
            names[stem], values[stem] = partial
    issues += _cross_check(values, names, sources)
    order = {sources[stem].name: i for i, stem in enumerate(FILE_MODELS) if stem in sources}
    issues.sort(key=lambda i: (order.get(i.file, len(order)), i.line or 0))
    if issues:
        raise ConfigError(issues)
    return Config(config_dir=directory, sources={s: src.path for s, src in sources.items()}, **values)


def _valid_entries(source: Source, model: type[BaseModel], key: str) -> tuple[list[str], dict[str, Any]] | None:
    """For a file that failed validation: all entry names, and the entries that are valid on their own.

    Cross-file checks then still run on the good entries, and a broken entry
    does not cascade into 'unknown component' errors elsewhere.
    """
    entries = _plain(source.tree).get(key) if isinstance(source.tree, Mapping) else None
    if not isinstance(entries, dict):
        return None  # unreadable or not a mapping: skip the checks that need these names
    entry_model = _model_at(model, (key, "-"))
    valid = {}
    for name, raw in entries.items():
        try:
            valid[name] = entry_model.model_validate(raw)
        except ValidationError:
            pass
    return [str(n) for n in entries], valid


# --------------------------------------------------------------------------- cross-file rules
def _known(names: Any) -> str:
    return f"(known: {', '.join(names) or 'none'})"


def _cross_check(values: dict[str, Any], names: dict[str, list[str]],
                 sources: dict[str, Source]) -> list[ConfigIssue]:
    """Rules that span files or need the whole DAG; a file that could not be parsed is skipped."""
    issues: list[ConfigIssue] = []
    components = names.get("components")
    if "pipelines" in values and "pipelines" in sources:
        for name, pipeline in values["pipelines"].items():
            issues += _check_pipeline(sources["pipelines"], name, pipeline, components)
    if "experiments" in values and "experiments" in sources:
        issues += _check_experiments(sources["experiments"], values["experiments"], components)
    if "schedules" in values and "schedules" in sources:
        issues += _check_schedules(sources["schedules"], values["schedules"], names)
    if "platform" in values and "platform" in sources:
        issues += _check_blocked_terms(sources["platform"], values["platform"], values)
    return issues


def _check_blocked_terms(src: Source, platform: Any, values: dict[str, Any]) -> list[ConfigIssue]:
    """Terms to block that no trust hook applies would silently block nothing."""
    if not platform.gateway.blocked_terms:
        return []
    owners = [*values.get("components", {}).values(), *values.get("pipelines", {}).values()]
    if any("block_terms" in owner.trust.pre or "block_terms" in owner.trust.post for owner in owners):
        return []
    return [src.issue(("gateway", "blocked_terms"), "no component or pipeline lists block_terms in its trust "
                                                    "hooks, so these terms would block nothing; add block_terms "
                                                    "to a trust.pre list or remove them")]


def _check_pipeline(src: Source, name: str, pipeline: Any, components: list[str] | None) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    steps = pipeline.steps
    base: Loc = ("pipelines", name, "steps")
    for step_name, step in steps.items():
        here = base + (step_name,)
        if components is not None and step.component not in components:
            issues.append(src.issue(here + ("component",),
                                    f"unknown component {step.component!r} {_known(components)}"))
        fb = step.fallback
        if components is not None and fb is not None and fb.component is not None and fb.component not in components:
            issues.append(src.issue(here + ("fallback", "component"),
                                    f"unknown component {fb.component!r} {_known(components)}"))
        for i, dep in enumerate(step.depends_on):
            if dep not in steps:
                issues.append(src.issue(here + ("depends_on", i), f"unknown step {dep!r} {_known(steps)}",
                                        field=here + ("depends_on",)))
    deps = {s: [d for d in step.depends_on if d in steps] for s, step in steps.items()}
    cycle = find_cycle(deps)
    if cycle:
        first, second = cycle[0], cycle[1]
        index = steps[first].depends_on.index(second)
        issues.append(src.issue(base + (first, "depends_on", index), "dependency cycle: " + " -> ".join(cycle),
                                field=base + (first, "depends_on")))
    for step_name, step in steps.items():
        allowed = ancestors(deps, step_name) - {step_name}
        values = [(base + (step_name, "inputs"), step.inputs)]
        if step.fallback is not None:
            values.append((base + (step_name, "fallback", "output"), step.fallback.output))
        for loc, value in values:
            issues += _check_templates(src, loc, value, steps, allowed, step_name)
    issues += _check_templates(src, ("pipelines", name, "output"), pipeline.output, steps, set(steps), None)
    if pipeline.inputs:
        for key in sorted(pipeline.request_keys - set(pipeline.inputs)):
            issues.append(src.issue(("pipelines", name, "inputs"), f"templates read request.{key}, which inputs "
                                                                    f"does not declare {_known(pipeline.inputs)}"))
    return issues


def _check_templates(src: Source, base: Loc, value: Any, steps: dict, allowed: set[str],
                     owner: str | None) -> list[ConfigIssue]:
    """Every ``${...}`` must read the request or a step that is guaranteed to have finished."""
    issues = []
    for loc, text in iter_template_strings(value, base):
        for expr in template_expressions(text):
            step = referenced_step(expr)
            if step is None:
                if not (expr == "request" or expr.startswith(("request.", "request["))):
                    issues.append(src.issue(loc, f"template ${{{expr}}} must start with 'request.' or 'steps.<step>'"))
            elif step not in steps:
                issues.append(src.issue(loc, f"template ${{{expr}}}: unknown step {step!r} {_known(steps)}"))
            elif step == owner:
                issues.append(src.issue(loc, f"template ${{{expr}}}: a step cannot read its own output"))
            elif step not in allowed:
                issues.append(src.issue(loc, f"template ${{{expr}}}: step {step!r} is not in depends_on of "
                                             f"{owner!r} (directly or transitively), so it may not have run yet"))
    return issues


def _check_experiments(src: Source, experiments: dict, components: list[str] | None) -> list[ConfigIssue]:
    issues = []
    running: dict[str, str] = {}
    for name, exp in experiments.items():
        loc = ("experiments", name, "component")
        if components is not None and exp.component not in components:
            issues.append(src.issue(loc, f"unknown component {exp.component!r} {_known(components)}"))
        if exp.enabled:
            if exp.component in running:
                issues.append(src.issue(loc, f"component {exp.component!r} already has an enabled experiment "
                                             f"{running[exp.component]!r}"))
            running.setdefault(exp.component, name)
    return issues


#: schedule ``parameters`` keys that name things defined in other files
_PARAMETER_REFERENCES = {"pipelines": "pipelines", "components": "components", "experiment": "experiments"}


def _check_schedules(src: Source, schedules: dict, names: dict[str, list[str]]) -> list[ConfigIssue]:
    issues = []
    for name, schedule in schedules.items():
        for key, kind in _PARAMETER_REFERENCES.items():
            known = names.get(kind)
            given = schedule.parameters.get(key)
            if known is None or given is None:
                continue
            items = [(i, v) for i, v in enumerate(given)] if isinstance(given, list) else [(None, given)]
            for i, item in items:
                if not isinstance(item, str) or item not in known:
                    loc = ("schedules", name, "parameters", key) + ((i,) if i is not None else ())
                    issues.append(src.issue(loc, f"unknown {kind[:-1]} {item!r} {_known(known)}",
                                            field=("schedules", name, "parameters", key)))
    return issues
