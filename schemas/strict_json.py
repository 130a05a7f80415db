"""JSON as JSON defines it, and as the stores can keep it — not as Python's ``json`` module accepts it.

Python's parser lets through what later stages cannot take, and a record that passes validation but breaks a
later stage would fail its whole batch (or, before per-item isolation, the whole bundle on every rerun):

* ``NaN``, ``Infinity``, ``-Infinity`` and numbers that overflow to infinity (``1e400``): not JSON, and the
  store refuses non-finite payload numbers;
* lone surrogates (``"\\ud800"``): not Unicode, so they cannot be encoded as UTF-8 — the tokenizer, the
  content hash and the store all refuse them;
* integers beyond 64 bits: the store would silently turn them into floats (data loss);
* nesting deeper than ``MAX_DEPTH``: the store's payload decoder has a recursion limit, and Python's own
  parser raises ``RecursionError`` (not a ``ValueError``) on very deep input.

``loads`` raises ``JsonRefused`` naming the first problem and where it is (``metadata.a[3]``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 64
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
# A lone surrogate can only come from a \\uD800-\\uDFFF escape: valid UTF-8 bytes never decode to one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class JsonRefused(ValueError):
    """Valid for Python, not for JSON or the stores. ``kind`` is ``"malformed"`` (not JSON at all) or
    ``"unicode"`` (a lone surrogate) or ``"value"`` (a number or nesting the store cannot keep)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _refuse_constant(name: str) -> Any:
    raise JsonRefused("malformed", f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused("value", f"number {text[:40]} overflows to infinity")
    return value


def loads(text: str) -> Any:
    """Parse ``text`` strictly (see the module docstring); raise ``JsonRefused`` or ``ValueError``."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise JsonRefused("value", f"nesting is deeper than {MAX_DEPTH} levels") from None
    check_value(value, surrogates=_SURROGATE_ESCAPE.search(text) is not None)
    return value


def check_value(value: Any, surrogates: bool = True, path: str = "") -> None:
    """Raise ``JsonRefused`` if ``value`` (already parsed) holds what the stores cannot keep."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise JsonRefused("value", f"{_at(where)}: nesting is deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            if surrogates and has_surrogate(item):
                raise JsonRefused("unicode", f"{_at(where)}: a lone surrogate is not valid Unicode")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not MIN_INT <= item <= MAX_INT:
                raise JsonRefused("value", f"{_at(where)}: integer {str(item)[:40]} does not fit in 64 bits")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise JsonRefused("value", f"{_at(where)}: {item} is not a JSON number")
        elif isinstance(item, dict):
            for key, child in item.items():
                if surrogates and isinstance(key, str) and has_surrogate(key):
                    raise JsonRefused("unicode", f"{_at(where)}: a key holds a lone surrogate")
                stack.append((child, f"{where}.{key}" if where else str(key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))


def _at(where: str) -> str:
    return (where[:77] + "...") if len(where) > 80 else (where or "value")


def has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
