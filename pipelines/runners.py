"""What the ingest needs to know about the Beam runner it is given, checked before anything is read.

* **Where the workers run.** The embedded store (qdrant-edge, or qdrant-client's local mode) lives in one
  process on one machine. A runner whose workers run elsewhere — Dataflow, Flink, Spark, Samza, a Dask
  scheduler, or a portable job whose SDK workers run in containers — cannot open it, so that combination is
  refused before the job starts, naming ``qdrant.backend = "server"``. The in-process runner and local
  portable runs (LOOPBACK, or an EXTERNAL worker pool on this machine) keep the embedded store.
* **Flink streaming finalizes bundles only after a completed checkpoint.** Offsets are committed in bundle
  finalization, so a Flink stream run without ``--checkpointing_interval`` would never commit: refused.
* **Who can stop the readers.** Readers in the launcher's process (the in-process runner, LOOPBACK workers)
  see the run's stop event and finish at their next checkpoint; elsewhere the launcher cancels the job.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions, PortableOptions, StandardOptions

from embedstream.schemas.errors import UsageError
from embedstream.schemas.settings import Settings

REMOTE_RUNNERS = ("DataflowRunner", "FlinkRunner", "SparkRunner", "SamzaRunner", "DaskRunner")
LOCAL_ENDPOINTS = ("embed", "localhost", "127.0.0.1", "[::1]")


class RunnerConfigError(UsageError):
    """This runner cannot run this pipeline as configured (the message says what to change)."""


def _all(options: PipelineOptions) -> dict[str, object]:
    """Every option given, including those Beam's Python side does not define (they go to the job server)."""
    return dict(options.get_all_options(retain_unknown_options=True))


def runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner
    if runner is None:
        return "FnApiRunner"
    return runner if isinstance(runner, str) else type(runner).__name__


def remote_workers(options: PipelineOptions) -> str | None:
    """Why this run's workers may not share the launcher's machine (None when they do)."""
    name = runner_name(options)
    portable = options.view_as(PortableOptions)
    environment = (portable.environment_type or "").upper()
    if name.split(".")[-1] in REMOTE_RUNNERS:
        given = _all(options)
        if name.endswith("DaskRunner") and not (given.get("dask_client_address") or given.get("address")):
            return None  # a local Dask cluster
        if name.endswith("FlinkRunner") and options.view_as(FlinkRunnerOptions).flink_master == "[local]":
            return None
        return f"runner {name} runs its workers on its own machines"
    if environment == "DOCKER":
        return "the portable runner starts its SDK workers in containers (environment_type=DOCKER)"
    endpoint = (portable.job_endpoint or "embed").split(":")[0]
    if environment not in ("LOOPBACK", "") and endpoint not in LOCAL_ENDPOINTS:
        return f"the job service at {portable.job_endpoint} may run workers elsewhere"
    return None


def finalizes_only_streaming(options: PipelineOptions) -> bool:
    """May the runner refuse bundle finalization in batch mode? Beam's portable Flink runner does
    (apache/beam#19526), whether reached as ``FlinkRunner`` or as ``PortableRunner`` at a job server (which may
    be Flink's: ``infra/k8s/flink`` submits so). A drain there asks for no finalizer and commits when the job has
    ended (``finish_partitions``), which is safe on every runner; it only gives up commits during the drain."""
    if options.view_as(StandardOptions).streaming:
        return False
    name = runner_name(options)
    endpoint = options.view_as(PortableOptions).job_endpoint or "embed"
    return name.endswith("FlinkRunner") or (name.endswith("PortableRunner") and endpoint != "embed")


def workers_see_stop(options: PipelineOptions) -> bool:
    """Do the readers run in this process (so that the run's stop event reaches them)?"""
    environment = (options.view_as(PortableOptions).environment_type or "").upper()
    return runner_name(options) in ("FnApiRunner", "DirectRunner") or environment == "LOOPBACK"


def check_runner(settings: Settings, options: PipelineOptions) -> None:
    """Refuse runner and store combinations that cannot work, before the job starts."""
    remote = remote_workers(options)
    if remote is not None and settings.qdrant.backend != "server":
        raise RunnerConfigError(
            f"{remote}, but the store is embedded (qdrant.backend = {settings.qdrant.backend!r}) and only this "
            "machine's one process can open it: use a Qdrant server (EMBEDSTREAM_QDRANT__BACKEND=server, "
            "EMBEDSTREAM_QDRANT__URL=…), or run locally"
        )
    name = runner_name(options)
    if settings.pipeline.mode == "stream" and name.endswith("FlinkRunner"):
        interval = _all(options).get("checkpointing_interval")  # passed through to Flink's job server
        if not interval or int(str(interval)) <= 0:
            raise RunnerConfigError(
                "Flink finalizes bundles (where embedstream commits offsets) only after a completed checkpoint: "
                "a stream run needs --checkpointing_interval=MS (e.g. 10000)"
            )
