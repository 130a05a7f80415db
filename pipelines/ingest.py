"""The ingest pipeline: Kafka → parse/validate → embed (token-budget batches) → quality gate → Qdrant,
dead letters to their topic, offsets committed (in bundle finalization) after the writes are durable.

``run_ingest`` is what the CLI and the tests call. Before the pipeline starts it checks, in this order, that
the broker answers, the model is built and the collection fits the model (a mismatch stops the run before
any write). Beam options pass through (``--runner`` etc.); without ``--runner`` the pipeline runs on Beam's
in-process FnApiRunner. ``--mode drain`` reads each partition from the group's committed offset up to its
high watermark at launch and returns; ``--mode stream`` runs until SIGINT/SIGTERM. The streaming path uses
no windows, GroupByKey or timers: the local runner would not fire them until the pipeline ends.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState

from embedstream.onnx_models.session import discard_preloaded, preload_sessions
from embedstream.pipelines.beam_fixes import keep_runner_metrics_flat
from embedstream.pipelines.handles import Handle
from embedstream.pipelines.io.deliver import Deliver
from embedstream.pipelines.io.kafka_clients import (
    PartitionSpec,
    broker_answers,
    current_partitions,
    dead_letter_limit,
    ensure_topics,
    output_limit,
    partition_backlog,
)
from embedstream.pipelines.io.kafka_read import ReadKafkaPartitions
from embedstream.pipelines.io.partition_owner import new_owner_id
from embedstream.pipelines.io.partition_plan import finish_partitions, plan_partitions
from embedstream.pipelines.metrics import METRICS_NAMESPACE
from embedstream.pipelines.observability import LagWatcher, ProbeServer
from embedstream.pipelines.plan import IngestPlan, model_sessions, plan_ingest
from embedstream.pipelines.progress import Progress
from embedstream.pipelines.runners import check_runner, finalizes_only_streaming, workers_see_stop
from embedstream.pipelines.spaces.reembed import RemakeFrom
from embedstream.pipelines.stores import StoreFullError, VectorStore, open_store, wait_until_released
from embedstream.pipelines.transforms.adapters import AudioAdapter, ImageAdapter, TextAdapter
from embedstream.pipelines.transforms.embed import Embed, ModalityAdapter
from embedstream.pipelines.transforms.parse import ParseEvents
from embedstream.schemas.envelope import Limits
from embedstream.schemas.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)
BROKER_CHECK_S = 5.0  # stream mode: how often the broker is asked whether it answers


@dataclass(frozen=True)
class IngestResult:
    points_upserted: int
    dead_letters: int
    video_views: int
    partitions: list[PartitionSpec]
    deletions: int = 0


@dataclass(frozen=True)
class Shared:
    """What a launcher shares with the steps that run in its own process, as explicit handles
    (``pipelines.handles``): its stop signal, its progress counters, and (``serve --ingest``) its open
    embedded store. Steps in other processes find none of them and use their own."""

    stop: Handle[threading.Event] | None = None
    progress: Handle[Progress] | None = None
    store: Handle[VectorStore] | None = None


def build_pipeline(
    pipeline: beam.Pipeline,
    settings: Settings,
    partitions: list[PartitionSpec],
    plan: IngestPlan,
    run_id: str,
    shared: Shared = Shared(),
) -> None:
    """One chain: read → parse → embed (text, pictures, sounds) → deliver. Dead letters travel down the chain
    with the points; no Flatten (on the local runner it would break fusion, and the delivery step must share
    the read's bundle so that offsets are committed in bundle finalization only after it has finished)."""
    limits = Limits(settings.pipeline.max_event_bytes, settings.pipeline.max_text_chars)
    bounded = all(p.stop is not None for p in partitions)
    finalize = not (bounded and finalizes_only_streaming(pipeline.options))
    records = pipeline | "ReadKafka" >> ReadKafkaPartitions(
        settings.kafka, settings.pipeline, partitions, run_id, shared.stop, finalize
    )
    flowing = records | "Parse" >> beam.ParDo(ParseEvents(limits, plan.modalities, settings.pipeline.skip))
    adapters: list[tuple[str, ModalityAdapter]] = [("EmbedText", TextAdapter(settings.model, settings.pipeline))]
    if plan.modalities & ImageAdapter.modalities:
        adapters.append(("EmbedImages", ImageAdapter(settings.model, settings.media, settings.pipeline)))
    if plan.modalities & AudioAdapter.modalities:
        adapters.append(("EmbedAudio", AudioAdapter(settings.model, settings.media, settings.pipeline)))
    for name, adapter in adapters:
        flowing = flowing | name >> beam.ParDo(Embed(adapter))
    deliver = Deliver(
        settings.kafka,
        settings.qdrant,
        settings.pipeline,
        plan.spaces,
        plan.fusion,
        shared.progress,
        shared.store,
        RemakeFrom.of(settings),
        _index_when_quiet(settings),
        run_id,
    )
    _ = flowing | "Deliver" >> beam.ParDo(deliver)


def _index_when_quiet(settings: Settings) -> tuple[float, int] | None:
    """Stream mode on the embedded store builds its HNSW index at quiet moments (``io.quiet_indexer``); a drain
    run optimizes once when it ends, and a server indexes by itself."""
    qdrant = settings.qdrant
    streaming = settings.pipeline.mode == "stream"
    if not streaming or qdrant.backend != "edge" or qdrant.index_when_quiet_s is None:
        return None
    return qdrant.index_when_quiet_s, qdrant.index_min_vectors


def pipeline_options(settings: Settings, beam_args: Sequence[str]) -> PipelineOptions:
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if settings.pipeline.mode == "stream" and standard.runner is not None:
        standard.streaming = True  # real streaming runners (Flink, Dataflow) need the flag
    return options


def _runner(options: PipelineOptions) -> PipelineRunner | None:
    if options.view_as(StandardOptions).runner is None:
        from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

        return FnApiRunner()
    return None


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM finish the readers at their next checkpoint instead of killing mid-write."""
    previous = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: finishing the current bundle, then stopping", signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _observed(settings: Settings, plan: IngestPlan, partitions: list[PartitionSpec]) -> Iterator[None]:
    """With ``pipeline.metrics_port``: Prometheus metrics, consumer lag and probes while the run lasts."""
    port = settings.pipeline.metrics_port
    if port is None:
        yield
        return
    probes = ProbeServer(settings.pipeline.metrics_host, port, lambda: _not_ready(settings, plan)).start()
    lag = LagWatcher(lambda: partition_backlog(settings.kafka, partitions), settings.pipeline.lag_interval_s).start()
    try:
        yield
    finally:
        lag.close()
        probes.close()


def _not_ready(settings: Settings, plan: IngestPlan) -> str | None:
    """What keeps this run from working now: the broker, the models, the store (None when all answer)."""
    try:
        current_partitions(settings.kafka, settings.pipeline.shard_of())
    except Exception as exc:
        return f"broker: {exc}"
    try:
        plan_ingest(settings)  # reads every model's manifest
    except Exception as exc:
        return f"models: {exc}"
    if settings.qdrant.backend == "server":
        store = open_store(settings.qdrant)
        try:
            store.count()
        except Exception as exc:
            return f"store: {exc}"
        finally:
            store.close()
    elif not Path(settings.qdrant.path).exists():  # embedded: this run holds it open; its folder tells
        return f"store: nothing at {settings.qdrant.path}"
    return None


def _await(result: PipelineResult, stop: threading.Event, grace_s: float) -> bool:
    """Wait for the job; once ``stop`` is set, give readers that see it ``grace_s`` to finish their bundle,
    then cancel the job (a remote runner's workers never see this process's stop event). True if cancelled."""
    done = threading.Event()
    failure: list[BaseException] = []

    def wait() -> None:
        try:
            result.wait_until_finish()
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    waiter = threading.Thread(target=wait, name="wait-for-job", daemon=True)
    waiter.start()
    while not done.wait(0.5):
        if stop.is_set() and not done.wait(grace_s):
            log.info("stopping: cancelling the job (its workers do not see this process's stop)")
            with contextlib.suppress(Exception):
                result.cancel()
            done.wait(60)
            return True  # cancelled on request: what was not committed is read again next time
    if failure and not (stop.is_set() and _cancelled(result)):
        raise failure[0]
    return False


def _cancelled(result: PipelineResult) -> bool:
    with contextlib.suppress(Exception):
        return str(result.state) == PipelineState.CANCELLED
    return False


@contextmanager
def _opened(settings: Settings, store: Handle[VectorStore] | None) -> Iterator[VectorStore]:
    """The shared store when there is one (left open), else the settings' store, closed after use."""
    if store is not None:
        yield store.get()
        return
    opened = open_store(settings.qdrant)
    try:
        yield opened
    finally:
        opened.close()


def _optimize(settings: Settings, store: Handle[VectorStore] | None) -> None:
    """After a drain, let the embedded engine build its HNSW index (it searches by brute force until then)."""
    with _opened(settings, store) as opened:
        started = time.monotonic()
        try:
            if opened.optimize():
                log.info("optimized the store's indexes in %.1f s", time.monotonic() - started)
        except StoreFullError as exc:  # the points are durable and committed: only the index waits
            log.warning("not indexing the store now (searches stay exact, and slower): %s", exc)


def run_ingest(
    settings: Settings,
    beam_args: Sequence[str] = (),
    stop: threading.Event | None = None,
    store: Handle[VectorStore] | None = None,
) -> IngestResult:
    """Run the ingest pipeline to completion (drain) or until stopped (stream).

    ``stop`` (default: a new event, set by SIGINT/SIGTERM when called on the main thread) ends a stream run
    at the readers' next checkpoint; setting it before the pipeline has started is not lost. A bounded run
    commits its stop offsets once the pipeline has finished successfully (``finish_partitions``), on any runner.
    ``store``: an embedded store this process already holds open (``serve --ingest`` shares its store with the
    pipeline this way, because one process may hold an embedded path only once); by default the pipeline
    opens the store the settings name."""
    kafka = settings.kafka
    options = pipeline_options(settings, beam_args)
    check_runner(settings, options)
    keep_runner_metrics_flat()  # a stream run on the in-process runner must not grow its metrics without bound
    if kafka.topic_pattern is None:
        ensure_topics(kafka, kafka.read_topics(set()), settings.pipeline.max_event_bytes)
    ensure_topics(kafka, [kafka.dead_letter_topic], dead_letter_limit(settings.pipeline.max_event_bytes))
    if settings.pipeline.output_topic is not None:
        output = settings.pipeline.output_topic
        ensure_topics(kafka, [output], output_limit(settings.pipeline.max_event_bytes), compacted=True)
    plan = plan_ingest(settings)
    log.info("embedding %s into %s", ", ".join(plan.groups), ", ".join(s.name for s in plan.spaces))
    if workers_see_stop(options):  # the steps run here: their sessions build while the rest starts up
        preload_sessions(model_sessions(settings, plan))
    with _opened(settings, store) as opened:
        opened.ensure_spaces(plan.spaces)
    stop = stop if stop is not None else threading.Event()
    progress = Handle.register(Progress(), "progress")
    live: list[PartitionSpec] = []  # the current cycle's partitions, for the lag metric
    known: set[tuple[str, int]] | None = None  # every partition planned so far; None before the first cycle
    counters: dict[str, int] = {}
    unmeasured = False
    try:
        with _stop_on_signals(stop), _observed(settings, plan, live):
            while True:
                shared = Shared(progress=progress, store=store)
                cycle = _run_cycle(settings, options, plan, stop, live, shared, known)
                known = (known or set()) | {(p.topic, p.partition) for p in cycle.partitions}
                unused = discard_preloaded()
                if unused and cycle.partitions:
                    log.warning("models loaded ahead that no step opened (start-up time wasted): %s", unused)
                unmeasured = unmeasured or cycle.counters is None
                for name, value in (cycle.counters or {}).items():
                    counters[name] = counters.get(name, 0) + value
                if stop.is_set() or not cycle.rediscover:
                    break
        if unmeasured and workers_see_stop(options):
            # The runner lost its metrics (Beam's in-process runner can, after a long stream run), but its
            # workers ran here and counted into this process's progress: the same counts, minus video views.
            counted = progress.get()
            counters = {
                **counters,
                "points_upserted": counted.points,
                "dead_letters": counted.dead_letters,
                "deletions": counted.deletions,
            }
    finally:
        progress.release()
        discard_preloaded()  # a run that failed before its steps opened them leaves nothing behind
    return IngestResult(
        points_upserted=int(counters.get("points_upserted", 0)),
        dead_letters=int(counters.get("dead_letters", 0)),
        video_views=int(counters.get("video_views", 0)),
        partitions=live,
        deletions=int(counters.get("deletions", 0)),
    )


def _release_after_failure(kafka: KafkaSettings, partitions: list[PartitionSpec], run_id: str) -> None:
    """Zero this run's claims after its pipeline failed; the failure itself is what propagates, so a broker that
    cannot be reached now only costs the next run the lease wait (logged), never the original error."""
    try:
        finish_partitions(kafka, partitions, run_id, completed=False)
    except Exception as exc:
        log.warning("could not release a failed run's partition claims (%s); the next run waits out the lease", exc)


@dataclass
class _Cycle:
    partitions: list[PartitionSpec]
    counters: dict[str, int] | None  # None: the runner gave no metrics
    rediscover: bool


def _run_cycle(
    settings: Settings,
    options: PipelineOptions,
    plan: IngestPlan,
    stop: threading.Event,
    live: list[PartitionSpec],
    shared: Shared,
    known: set[tuple[str, int]] | None = None,
) -> _Cycle:
    """One pipeline over the partitions there are now. In stream mode a watcher looks for new topics (a
    pattern) and partitions every ``discovery_interval_s``; when the set changes it ends this cycle the way a
    stop does (readers finish their bundle and commit) and the caller starts the next one over the new set —
    new partitions start from their committed offset, else from their beginning (``known``: the partitions
    earlier cycles planned; whatever is not among them appeared while this run streamed), so nothing is lost."""
    kafka, pipeline_settings = settings.kafka, settings.pipeline
    run_id = new_owner_id()
    bounded = pipeline_settings.mode == "drain"
    shard = pipeline_settings.shard_of()
    partitions = plan_partitions(
        kafka,
        pipeline_settings.max_event_bytes,
        bounded=bounded,
        owner=run_id,
        heartbeat_s=pipeline_settings.reader_heartbeat_s,
        shard=shard,
        known=None if known is None else frozenset(known),
    )
    live[:] = partitions
    backlog = sum((p.stop - p.start) for p in partitions if p.stop is not None)
    log.info(
        "ingest %s, shard %s: %s, %s",
        pipeline_settings.mode,
        pipeline_settings.shard,
        ", ".join(f"{p.topic}:{p.partition}" for p in partitions) or "no partitions yet",
        f"{backlog} events to drain" if bounded else "streaming until stopped",
    )
    halt = threading.Event()  # this cycle's end: a stop, or a change in the partitions
    rediscover = threading.Event()
    if not partitions:
        if bounded or stop.wait(pipeline_settings.discovery_interval_s):
            return _Cycle([], {}, rediscover=False)
        return _Cycle([], {}, rediscover=True)
    watcher = threading.Thread(
        target=_watch,
        args=(settings, {(p.topic, p.partition) for p in partitions}, shard, stop, halt, rediscover, bounded),
        name="partition-watch",
        daemon=True,
    )
    watcher.start()
    if not bounded:
        threading.Thread(target=_watch_broker, args=(settings.kafka, halt), name="broker-watch", daemon=True).start()
    halting = Handle.register(halt, "stop signal")
    ended = False
    try:
        pipeline = beam.Pipeline(runner=_runner(options), options=options)
        build_pipeline(pipeline, settings, partitions, plan, run_id, replace(shared, stop=halting))
        result = pipeline.run()
        grace_s = 4 * pipeline_settings.max_bundle_seconds if workers_see_stop(options) else 0.0
        cancelled = _await(result, halt, grace_s)
        ended = True
    finally:
        halt.set()
        halting.release()
        watcher.join(10)
        if not ended:  # a failed build or run: release the claims, so that a rerun need not wait out the lease
            _release_after_failure(kafka, partitions, run_id)
    finish_partitions(kafka, partitions, run_id, completed=bounded and not stop.is_set())
    if cancelled:
        log.info("job cancelled; its workers release the store when their runner tears them down")
    elif shared.store is None:  # a shared store stays open in this process, by design
        wait_until_released(settings.qdrant)
    if bounded and not cancelled:
        _optimize(settings, shared.store)
    return _Cycle(partitions, _counters(result), rediscover=rediscover.is_set() and not stop.is_set())


def _watch(
    settings: Settings,
    reading: set[tuple[str, int]],
    shard: tuple[int, int],
    stop: threading.Event,
    halt: threading.Event,
    rediscover: threading.Event,
    bounded: bool,
) -> None:
    """Until the cycle ends: pass a stop on to it and, in stream mode, end it when partitions appear."""
    interval = settings.pipeline.discovery_interval_s
    next_look = time.monotonic() + interval
    while not halt.wait(0.2):
        if stop.is_set():
            halt.set()
            return
        if bounded or time.monotonic() < next_look:
            continue
        next_look = time.monotonic() + interval
        try:
            now = current_partitions(settings.kafka, shard)
        except Exception as exc:  # the broker is away for a moment: look again later
            log.debug("partition discovery failed: %s", exc)
            continue
        if now - reading:
            log.info("new partitions %s: restarting the pipeline over them", sorted(now - reading))
            rediscover.set()
            halt.set()
            return


def _watch_broker(kafka: KafkaSettings, halt: threading.Event) -> None:
    """Stream mode: say so, every few seconds, while the broker does not answer. The readers just wait (the
    Kafka client reconnects by itself) and nothing is dead-lettered or committed meanwhile; without this line
    an outage would look like an idle topic."""
    away_since: float | None = None
    while not halt.wait(BROKER_CHECK_S):
        try:
            broker_answers(kafka)
        except Exception as exc:
            away_since = away_since or time.monotonic()
            log.warning(
                "the broker at %s has not answered for %.0f s (%s); reading resumes when it is back",
                kafka.bootstrap_servers,
                time.monotonic() - away_since,
                type(exc).__name__,
            )
            continue
        if away_since is not None:
            log.info("the broker answers again, after %.0f s away", time.monotonic() - away_since)
            away_since = None


def _counters(result: PipelineResult) -> dict[str, int] | None:
    """The run's counters from the runner's metrics, or None when it has none to give."""
    counters: dict[str, int] = {}
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    except Exception as exc:  # a cancelled remote job may have no metrics to give
        log.info("no metrics from the runner (%s)", exc)
        return None
    for counter in found:
        name = counter.key.metric.name
        counters[name] = counters.get(name, 0) + int(counter.committed or counter.attempted or 0)
    return counters
