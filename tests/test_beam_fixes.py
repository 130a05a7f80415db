"""Beam's in-process runner, patched to merge each bundle's metrics at once (pipelines/beam_fixes.py)."""

from __future__ import annotations

import itertools
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics import monitoring_infos
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.runners.portability.fn_api_runner import fn_runner

from embedstream.pipelines.beam_fixes import keep_runner_metrics_flat

pytestmark = pytest.mark.unit


def _bundle_counter(value: int) -> object:
    return monitoring_infos.int64_user_counter("ns", "events", value, ptransform="step")


def test_five_thousand_bundles_of_metrics_fold_into_one_counter_without_recursion() -> None:
    """What ``run_stages`` does once per bundle, 5,000 times (a stream run of an hour or so): the folded
    metrics stay one merged entry; Beam's own lazy generator chain would raise RecursionError when read."""
    keep_runner_metrics_flat()
    consolidate: Any = getattr(fn_runner, "consolidate_monitoring_infos")  # noqa: B009 - not exported by Beam
    folded: Any = [_bundle_counter(1)]
    for _ in range(4999):
        folded = consolidate(itertools.chain([_bundle_counter(1)], folded))
        assert isinstance(folded, list) and len(folded) == 1  # merged now, not deferred
    (merged,) = folded
    assert monitoring_infos.extract_counter_value(merged) == 5000


def test_a_pipeline_still_reports_its_counters() -> None:
    keep_runner_metrics_flat()
    counter = Metrics.counter("embedstream-test", "seen")

    def count(x: int) -> int:
        counter.inc()
        return x

    pipeline = beam.Pipeline(runner="FnApiRunner")
    _ = pipeline | beam.Create(range(100)) | beam.Map(count)
    result = pipeline.run()
    result.wait_until_finish()
    (found,) = result.metrics().query(MetricsFilter().with_namespace("embedstream-test"))["counters"]
    assert found.committed == 100
