"""The one home of every configuration default: the schema, workflow/schemas/config.schema.yaml.

Snakemake fills a user's config from it (``validate`` in the Snakefile). The library's option classes take
their field defaults from the same schema (``schema_defaults``), so that a default is written once, and
the library called from a test or a notebook behaves as the workflow does. A class that writes a default
of its own for a key of the schema is refused at import.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


@functools.cache
def _schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA_PATH.read_text())


def section_schema(section: str) -> dict:
    """The schema of one object of the config.

    Args:
        section: a top-level key (``prediction``), or a path into the schema's definitions
            (``$defs/preset/training``: the ``training`` object of a preset).
    """
    first, *rest = section.split("/")
    if first == "$defs":
        node = _schema()["$defs"][rest.pop(0)]
    else:
        node = _schema()["properties"][first]
    for key in rest:
        node = _resolved(node)["properties"][key]
    return _resolved(node)


def _resolved(node: dict) -> dict:
    """``node`` with a local ``$ref`` (``#/properties/augmentation``) replaced by what it names."""
    if "$ref" not in node:
        return node
    target = _schema()
    for key in node["$ref"].removeprefix("#/").split("/"):
        target = target[key]
    return _resolved(target)


def schema_defaults(section: str) -> dict:
    """The default of every key of ``section`` (``section_schema``) that has one, as a fresh copy."""
    properties = section_schema(section)["properties"]
    return {key: copy.deepcopy(spec["default"]) for key, spec in properties.items() if "default" in spec}


def defaults_from_schema(section: str, required: tuple[str, ...] = ()):
    """Class decorator, applied before ``@dataclass``: each field named like a key of ``section`` gets the
    schema's default, except the ``required`` ones (a null in the schema that the caller resolves first).

    Raises:
        TypeError: the class writes its own default for such a field (it would drift from the schema).
    """

    def decorate(cls):
        defaults = schema_defaults(section)
        for name in cls.__annotations__:
            if name not in defaults or name in required:
                continue
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__}.{name}: its default lives in {SCHEMA_PATH.name} ({section})")
            setattr(cls, name, _field_default(defaults[name]))
        return cls

    return decorate


def _field_default(value):
    """A dataclass default of a schema default: a list as a tuple, an object as a fresh copy per instance
    (dataclasses refuse mutable defaults)."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return dataclasses.field(default_factory=functools.partial(copy.deepcopy, value))
    return value


def _leaves(node: dict, prefix: str):
    """(dotted key, schema) of every option below ``node``; objects with properties are descended into."""
    for key, spec in node.get("properties", {}).items():
        name = f"{prefix}{key}"
        if "properties" in spec:
            yield from _leaves(spec, name + ".")
        else:
            yield name, spec


def _shown(value) -> str:
    return f"`{value}`" if isinstance(value, str) else f"`{json.dumps(value)}`"


def options_table() -> str:
    """The Markdown table of every option (key, default, meaning) that config/README.md shows, from the schema.

    Datasets are left out: their keys describe data (config/README.md, "Datasets").
    """
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    top = {key: spec for key, spec in _schema()["properties"].items() if key not in ("presets", "datasets")}
    options = list(_leaves({"properties": top}, "")) + list(_leaves(_schema()["$defs"]["preset"], "presets.NAME."))
    for name, spec in options:
        default = _shown(spec["default"]) if "default" in spec else "(none)"
        rows.append(f"| `{name}` | {default} | {spec.get('description', '')} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m unet_pipeline.core.defaults: the table to paste into config/README.md
    print(options_table(), end="")
