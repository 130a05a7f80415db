"""A fix for Beam's in-process runner that a long stream run needs: its metrics must not grow without bound.

``FnApiRunner.run_stages`` folds each bundle's metrics into the stage's with
``consolidate_monitoring_infos(itertools.chain(new, previous))``, and ``consolidate`` is a generator: nothing is
merged until someone reads the result. A stream run ends a bundle every ``max_latency_ms`` or idle recheck, so
after hours the stage's metrics are a chain of thousands of unread generators. Each keeps its bundle's
monitoring infos alive (memory grows for as long as the run lasts), and reading the chain at the end recurses
once per bundle: "maximum recursion depth exceeded" after about a thousand bundles, and the run's counts are lost.

``keep_runner_metrics_flat`` makes the runner's ``consolidate_monitoring_infos`` return a list, so every bundle's
metrics are merged when it ends: constant memory per stage, no recursion. It changes nothing else, only in this
process, and is idempotent. Remove it once Beam materializes the consolidation itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from apache_beam.metrics import monitoring_infos
from apache_beam.runners.portability.fn_api_runner import fn_runner


def _consolidated(metrics: Iterable[Any], key: Any = monitoring_infos.to_key) -> list[Any]:
    return list(monitoring_infos.consolidate(metrics, key))


def keep_runner_metrics_flat() -> None:
    """Make the in-process runner merge each bundle's metrics eagerly (see the module's docstring)."""
    setattr(fn_runner, "consolidate_monitoring_infos", _consolidated)  # noqa: B010 - the name is a private import
