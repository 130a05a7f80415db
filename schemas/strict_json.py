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


# Built once: json.loads with a hook builds a decoder on every call (~4 µs an event on the hot path).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def loads(text: str) -> Any:
    """Parse ``text`` strictly (see the module docstring); raise ``JsonRefused`` or ``ValueError``."""
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise JsonRefused("value", f"nesting is deeper than {MAX_DEPTH} levels") from None
    check_value(value, surrogates="\\u" in text and _SURROGATE_ESCAPE.search(text) is not None)
    return value


def check_value(value: Any, surrogates: bool = True) -> None:
    """Raise ``JsonRefused`` if ``value`` (already parsed) holds what the stores cannot keep.

    Every event is walked, so the walk builds no paths; only a value that fails is walked again to say where
    (``_locate``)."""
    if not _fits(value, surrogates, 0):
        raise _locate(value, surrogates, "", 0) or JsonRefused("value", "value cannot be stored")


def _fits(item: Any, surrogates: bool, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False
    if isinstance(item, str):
        return not (surrogates and has_surrogate(item))
    if isinstance(item, bool) or item is None:
        return True
    if isinstance(item, int):
        return MIN_INT <= item <= MAX_INT
    if isinstance(item, float):
        return math.isfinite(item)
    if isinstance(item, dict):
        return all(
            not (surrogates and has_surrogate(key)) and _fits(child, surrogates, depth + 1)
            for key, child in item.items()
        )
    if isinstance(item, list):
        return all(_fits(child, surrogates, depth + 1) for child in item)
    return True


def _locate(item: Any, surrogates: bool, where: str, depth: int) -> JsonRefused | None:
    """The first problem in ``item`` as a ``JsonRefused`` naming where it is (``metadata.a[3]``)."""
    if depth > MAX_DEPTH:
        return JsonRefused("value", f"{_at(where)}: nesting is deeper than {MAX_DEPTH} levels")
    if isinstance(item, str):
        if surrogates and has_surrogate(item):
            return JsonRefused("unicode", f"{_at(where)}: a lone surrogate is not valid Unicode")
    elif isinstance(item, bool) or item is None:
        return None
    elif isinstance(item, int):
        if not MIN_INT <= item <= MAX_INT:
            return JsonRefused("value", f"{_at(where)}: integer {str(item)[:40]} does not fit in 64 bits")
    elif isinstance(item, float):
        if not math.isfinite(item):
            return JsonRefused("value", f"{_at(where)}: {item} is not a JSON number (it overflows, or is NaN)")
    elif isinstance(item, dict):
        for key, child in item.items():
            if surrogates and has_surrogate(key):
                return JsonRefused("unicode", f"{_at(where)}: a key holds a lone surrogate")
            found = _locate(child, surrogates, f"{where}.{key}" if where else str(key), depth + 1)
            if found is not None:
                return found
    elif isinstance(item, list):
        for i, child in enumerate(item):
            found = _locate(child, surrogates, f"{where}[{i}]", depth + 1)
            if found is not None:
                return found
    return None


def _at(where: str) -> str:
    return (where[:77] + "...") if len(where) > 80 else (where or "value")


def has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
