"""The reference parts of the docs, made from the code so they cannot drift: every setting (from the settings
models) into ``docs/configuration.md``, between its ``settings:begin`` / ``settings:end`` markers.

``python -m embedstream.workers.docs_reference`` (``make docs``) rewrites it; ``tests/test_docs.py`` fails when the
file and the models disagree, and checks ``docs/cli.md`` against the command-line parser.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from embedstream.schemas.settings import Settings

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def _type_name(annotation: Any) -> str:
    """A field's type as a reader writes it: ``int``, ``str | None``, ``"drain" | "stream"``, ``list[str]``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(below)"
    if hasattr(value, "get_secret_value"):
        return '""' if not value.get_secret_value() else "(secret)"
    return json.dumps(value, default=str)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(model: type[BaseModel], prefix: str, env: str) -> list[str]:
    rows: list[str] = []
    nested: list[tuple[type[BaseModel], str, str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((annotation, f"{prefix}.{name}", f"{env}__{name.upper()}"))
            continue
        rows.append(
            f"| `{prefix}.{name}` | `{env}__{name.upper()}` | {_cell(_type_name(annotation))} | "
            f"`{_cell(_default(field))}` | {_cell(field.description or '')} |"
        )
    for sub, sub_prefix, sub_env in nested:
        rows += _rows(sub, sub_prefix, sub_env)
    return rows


def settings_reference() -> str:
    """Markdown: a table per section of every setting, its environment variable, type, default and meaning."""
    parts: list[str] = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        parts += [
            f"### `[{section}]`",
            "",
            _cell((model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""),
            "",
            "| setting | environment | type | default | what it does |",
            "|---|---|---|---|---|",
            *_rows(model, section, f"EMBEDSTREAM_{section.upper()}"),
            "",
        ]
    return "\n".join(parts).rstrip() + "\n"


def with_reference(document: str) -> str:
    """``document`` with the text between its markers replaced by ``settings_reference()``."""
    head, rest = document.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{settings_reference()}{END}{tail}"


def main(path: str = "docs/configuration.md") -> None:
    target = Path(path)
    target.write_text(with_reference(target.read_text()))


if __name__ == "__main__":
    main(*sys.argv[1:])
