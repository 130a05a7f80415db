"""The one place that creates ONNX Runtime sessions.

Requested providers are checked against ``onnxruntime.get_available_providers()``: none available is an
error that names the available ones; some missing is a logged fallback. The provider actually used is
logged, so a silently CPU-bound "GPU" deployment shows up in the first lines of the log.

Sessions can be built ahead (``preload_sessions``): ONNX Runtime builds a session without holding the GIL, so
a launcher that knows which models its steps will open starts them on a background thread while it does the
rest of its start-up (broker round trips, building the pipeline, starting the runner), and ``session_for``
then takes the one built for the same file and the same runtime settings instead of building it again. Only
the timing changes: it is the session ``session_for`` would have built. Each preloaded session is taken once
(a second caller builds its own, as without a preload); one whose build failed is built again by the caller,
which then reports the failure as usual; ``discard_preloaded`` drops what nobody took.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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


_preload_lock = threading.Lock()
_preloaded: dict[tuple[str, int, int, str], Future[OrtSession]] = {}


def _preload_key(path: Path, runtime: ModelSettings) -> tuple[str, int, int, str] | None:
    """The file (by path, size and modification time: a rebuilt model is another file) and the settings."""
    try:
        stat = path.stat()
    except OSError:
        return None  # not built: whoever opens it reports that
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns, runtime.model_dump_json()


def preload_sessions(sessions: Iterable[tuple[Path, ModelSettings]]) -> None:
    """Start building these sessions, in order, on one background thread (see the module docstring)."""
    builder = ThreadPoolExecutor(1, thread_name_prefix="session-preload")
    with _preload_lock:
        for path, runtime in sessions:
            key = _preload_key(path, runtime)
            if key is not None and key not in _preloaded:
                _preloaded[key] = builder.submit(_build, path, runtime)
    builder.shutdown(wait=False)


def discard_preloaded() -> list[str]:
    """Drop the preloaded sessions nobody took (waiting for one still building); their files' names (a launcher
    that preloaded what its steps never opened wasted start-up time: worth a warning)."""
    with _preload_lock:
        left = list(_preloaded.items())
        _preloaded.clear()
    for _, future in left:
        if not future.cancel():  # already building: let it end, so no build outlives the discard
            future.exception()
    return [Path(key[0]).name for key, _ in left]


def _take_preloaded(path: Path, runtime: ModelSettings) -> OrtSession | None:
    key = _preload_key(path, runtime)
    with _preload_lock:
        future = _preloaded.pop(key, None) if key is not None else None
    if future is None:
        return None
    try:
        return future.result()
    except Exception:  # built again by the caller, which reports the failure where it belongs
        return None


def session_for(path: Path, runtime: ModelSettings | None = None) -> OrtSession:
    """A session configured by the ``[model]`` settings (providers, threads, arena); defaults when None. The one
    ``preload_sessions`` built for this file and these settings, when there is one."""
    runtime = runtime or ModelSettings()
    preloaded = _take_preloaded(path, runtime)
    return preloaded if preloaded is not None else _build(path, runtime)


def _build(path: Path, runtime: ModelSettings) -> OrtSession:
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
