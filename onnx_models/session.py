"""The one place that creates ONNX Runtime sessions.

Requested providers are checked against ``onnxruntime.get_available_providers()``: none available is an
error that names the available ones; some missing is a logged fallback. The provider actually used is
logged, so a silently CPU-bound "GPU" deployment shows up in the first lines of the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import onnxruntime as ort

from embedstream.schemas.errors import EmbedstreamError
from embedstream.schemas.settings import ModelSettings

log = logging.getLogger(__name__)


class ProviderUnavailableError(EmbedstreamError):
    """None of the requested execution providers exists in this onnxruntime build."""


class NodeArg(Protocol):
    """A graph input or output as ONNX Runtime describes it."""

    @property
    def name(self) -> str: ...


class OrtSession(Protocol):
    """The part of ``onnxruntime.InferenceSession`` the encoders use, typed (onnxruntime ships no stubs)."""

    def get_inputs(self) -> Sequence[NodeArg]: ...

    def get_providers(self) -> list[str]: ...

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


def session_for(path: Path, runtime: ModelSettings | None = None) -> OrtSession:
    """A session configured by the ``[model]`` settings (providers, threads, arena); defaults when None."""
    runtime = runtime or ModelSettings()
    return create_session(
        path,
        runtime.providers,
        runtime.intra_op_threads,
        runtime.inter_op_threads,
        runtime.cpu_mem_arena,
        runtime.intra_op_spinning,
    )


def create_session(
    path: Path,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    intra_op_threads: int = 0,
    inter_op_threads: int = 1,
    cpu_mem_arena: bool = True,
    spinning: bool | None = None,
) -> OrtSession:
    """An inference session with all graph optimizations, sequential execution and the given threads.

    ``intra_op_threads=0`` keeps ONNX Runtime's default (one per physical core), measured best on 2 cores.
    ``spinning=False``: ORT's worker threads sleep between runs instead of spinning, leaving the cores to the
    threads that decode pictures and sounds beside the encoder (``bench/reports/ingest_media.md``); None: ORT's
    default (spinning).
    """
    available = ort.get_available_providers()
    usable = [p for p in providers if p in available]
    if not usable:
        raise ProviderUnavailableError(
            f"none of the requested execution providers {list(providers)} is available; "
            f"this onnxruntime has {available} (set EMBEDSTREAM_MODEL__PROVIDERS)"
        )
    skipped = [p for p in providers if p not in available]
    if skipped:
        log.warning("execution providers %s are not available, falling back to %s", skipped, usable)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.enable_cpu_mem_arena = cpu_mem_arena
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=usable)
    log.info("loaded %s on %s (intra_op_threads=%s)", path.name, session.get_providers()[0], intra_op_threads)
    return cast(OrtSession, session)
