"""Read Kafka with a splittable DoFn, one restriction per partition (kafka-python; no Java, no expansion jar).

Contract:
* The element is a ``PartitionSpec``; its restriction is the offset range ``[start, stop)`` — ``stop`` is the
  high watermark at launch in drain mode and unbounded in stream mode. Resume state is the next offset.
* Each partition is read by a consumer of its own, kept across bundles (up to ``MAX_READERS`` per worker), so
  a fetch in flight survives the end of a bundle: a broker slower than an idle poll still delivers.
* Reads never block forever: each ``process`` call reads at most ``max_records_per_bundle`` records, then
  checkpoints (``defer_remainder``). Every checkpoint ends a bundle, and the delivery step makes the bundle's
  points durable at its end, where offsets are committed too; so when a bundle closes decides freshness.
* Stream mode closes a bundle as soon as the reader has **caught up** with the partition (its position reached
  the high watermark of the last fetch): an event never waits for input that is not there. Under a backlog it
  is never caught up, so bundles fill (whole sort windows and encoder batches, full throughput) until the
  first record read has waited ``max_latency_ms`` (the latency budget; the work in flight finishes after it).
  An idle partition checkpoints after one poll of ``idle_poll_ms``, short enough that partitions read one
  after another in one worker (Beam's in-process runner) still see new events within the budget.
  Drain mode is a backlog by definition: bundles close at ``max_records_per_bundle`` or ``max_bundle_seconds``.
* Offsets are committed to the consumer group in *bundle finalization* (the way Beam's Java KafkaIO commits
  in finalize): the runner finalizes a bundle only after every DoFn of it has finished. The ingest chain is one
  fused stage whose sinks make points and dead letters durable in ``finish_bundle``, so the commit follows the
  writes; a failed write fails the bundle and nothing is committed. (On a runner that does shuffle the read's
  output, finalization follows the runner's durable commit of it instead — still nothing lost.)
* Resumption starts after the last claimed record. A record may be delivered again after a crash (the group
  offset trails what was processed); that is safe because point ids are deterministic: at-least-once
  delivery, exactly-once effect.
* One reader per partition, in order: the tracker accepts only checkpoints (fraction 0), never a runner's
  split of a partition's range at another fraction (Dataflow's dynamic work rebalancing would otherwise let
  two workers read one partition at once). Every commit carries this run's ownership claim and is fenced
  against another owner's (``partition_owner``); an idle partition re-commits its offset every
  ``reader_heartbeat_s`` so that its claim stays alive — which also retries a commit that failed.
* Stopping: the launcher passes its stop ``threading.Event`` as a ``Handle`` (``pipelines.handles``); readers
  in the launcher's process finish every restriction at their next checkpoint once it is set, so a local
  stream-mode run stops cleanly after delivering what it read. Readers in other processes (a remote runner's
  workers) find no event behind the handle: there, stopping is the runner's job (drain or cancel the job).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics.metric import Metrics
from apache_beam.runners.sdf_utils import RestrictionTrackerView
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp
from kafka import KafkaConsumer, TopicPartition

from embedstream.pipelines.handles import Handle
from embedstream.pipelines.io import partition_owner
from embedstream.pipelines.io.kafka_clients import PartitionSpec, consumer
from embedstream.pipelines.metrics import METRICS_NAMESPACE
from embedstream.pipelines.observability import INGEST
from embedstream.schemas.records import KafkaRecord
from embedstream.schemas.settings import KafkaSettings, PipelineSettings

log = logging.getLogger(__name__)
UNBOUNDED = sys.maxsize
IDLE_RECHECK_S = 0.05  # a resume delay for runners that honour it; the idle poll itself waits for records
MIN_IDLE_POLL_MS = 10
COMMIT_ATTEMPTS = 5
# Consumers a reader keeps (one per partition it reads); each may buffer one fetch (max_partition_fetch_bytes).
MAX_READERS = 16
COMMIT_BACKOFF_S = 0.2
COMMIT_FAILURES = Metrics.counter(METRICS_NAMESPACE, "commit_failures")


class CheckpointOnlyTracker(OffsetRestrictionTracker):
    """An offset tracker that splits only to checkpoint (fraction 0): a partition is read by one worker, in
    order, and no later range can commit past an earlier one still being read."""

    def try_split(self, fraction_of_remainder: float) -> tuple[OffsetRange, OffsetRange] | None:
        if fraction_of_remainder != 0:
            return None
        split: tuple[OffsetRange, OffsetRange] | None = super().try_split(0)  # type: ignore[no-untyped-call]
        return split


class _PartitionRestrictions(RestrictionProvider):
    def initial_restriction(self, element: PartitionSpec) -> OffsetRange:
        return OffsetRange(element.start, element.stop if element.stop is not None else UNBOUNDED)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return CheckpointOnlyTracker(restriction)

    def restriction_size(self, element: PartitionSpec, restriction: OffsetRange) -> int:
        size: int = restriction.size()
        return size

    def split(self, element: PartitionSpec, restriction: OffsetRange) -> Iterator[OffsetRange]:
        yield restriction  # one restriction per partition: Kafka order within a partition is kept


_RESTRICTION = beam.DoFn.RestrictionParam(_PartitionRestrictions())
_WATERMARK = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())


def idle_poll_ms(pipeline: PipelineSettings, partitions: int) -> int:
    """How long one poll of an idle partition may block: a worker may poll its partitions one after another,
    so together they must leave most of the latency budget to the event that arrives meanwhile."""
    share = pipeline.max_latency_ms // (4 * max(1, partitions))
    return max(MIN_IDLE_POLL_MS, min(pipeline.poll_timeout_ms, share))


class _ReadPartition(beam.DoFn):
    def __init__(
        self,
        kafka: KafkaSettings,
        pipeline: PipelineSettings,
        run_id: str,
        idle_poll_ms: int,
        stop: Handle[threading.Event] | None,
    ) -> None:
        self._kafka = kafka
        self._pipeline = pipeline
        self._run_id = run_id
        self._idle_poll_ms = idle_poll_ms
        self._stop = stop

    def setup(self) -> None:
        # The launcher's stop event, resolved once here (not per record): present only in the launcher's process.
        stop = self._stop
        self._stop_event = stop.get() if stop is not None and stop.available else None
        self._readers: OrderedDict[TopicPartition, KafkaConsumer] = OrderedDict()  # least recently used first
        self._committer = consumer(self._kafka, self._pipeline.max_event_bytes, group=True)
        self._owners = partition_owner.owners_for(self._kafka, self._run_id)
        self._commit_lock = threading.Lock()
        self._committed: dict[TopicPartition, tuple[int, float]] = {}  # offset, when
        self._fenced: dict[TopicPartition, str] = {}
        self._keeper = partition_owner.ClaimKeeper(
            self._kafka, self._run_id, self._pipeline.reader_heartbeat_s, self._lost, ending=self._stopping
        )

    def _lost(self, tp: TopicPartition, why: str) -> None:
        """Another owner claimed ``tp`` (told by the claim keeper): the next bundle of it raises."""
        self._fenced[tp] = why
        log.error("%s", why)

    def teardown(self) -> None:
        self._keeper.stop()
        for reader in self._readers.values():
            reader.close()
        self._committer.close()
        self._owners.close()

    def _reader(self, tp: TopicPartition) -> KafkaConsumer:
        """This partition's own consumer, kept across bundles (the ``MAX_READERS`` most recently used).

        One consumer per partition, as Beam's Java KafkaIO keeps one per split: reassigning a shared consumer
        from one partition to the next would drop its fetch in flight, so a broker whose fetches take longer
        than an idle poll (tiered storage reading from object storage, a distant region) would never deliver
        a record to a worker reading several partitions. Kept, the fetch completes in the background (the
        client's I/O thread) and the next bundle finds its records."""
        reader = self._readers.pop(tp, None)
        if reader is None:
            if len(self._readers) >= MAX_READERS:
                _, oldest = self._readers.popitem(last=False)
                oldest.close()
            # The broker holds an empty fetch up to fetch_max_wait_ms: no longer than an idle poll, so an idle
            # partition answers within it.
            # reset="earliest": every read seeks to its own offset; one the broker no longer retains (retention,
            # DeleteRecords) moves to the oldest retained record, never past what is still there to the end.
            reader = consumer(
                self._kafka, self._pipeline.max_event_bytes, reset="earliest", fetch_max_wait_ms=self._idle_poll_ms
            )
            reader.assign([tp])
            reader.seek(tp, 0)  # a known position, so that position() below never asks the broker
        self._readers[tp] = reader
        return reader

    def _stopping(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    def _commit_due(self, tp: TopicPartition, position: int) -> bool:
        offset, when = self._committed.get(tp, (-1, 0.0))
        return position > offset or time.monotonic() - when >= self._pipeline.reader_heartbeat_s

    def _commit(self, tp: TopicPartition, offset: int) -> None:
        """Bundle-finalization callback: the bundle's outputs are durable, move the group's offset (or, with
        the same offset, renew this reader's claim)."""
        with self._commit_lock:
            if tp in self._fenced or not self._commit_due(tp, offset):
                return
            for attempt in range(COMMIT_ATTEMPTS):
                try:
                    partition_owner.commit(self._committer, self._owners, tp, offset)
                    self._committed[tp] = (offset, time.monotonic())
                    return
                except partition_owner.PartitionOwnedError as exc:
                    self._fenced[tp] = str(exc)  # process() raises it: this reader must stop
                    log.error("%s", exc)
                    return
                except Exception as exc:  # a dropped connection: kafka-python reconnects on the next try
                    delay = COMMIT_BACKOFF_S * 2**attempt
                    log.info("offset commit of %s at %d failed (%s); retrying in %.1fs", tp, offset, exc, delay)
                    time.sleep(delay)
            # Not lost: the next bundle's commit, or the next heartbeat of an idle partition, commits it again.
            COMMIT_FAILURES.inc()
            INGEST.commit_failures.inc()
            log.warning("commit of %s at %d failed %d times; the next bundle retries", tp, offset, COMMIT_ATTEMPTS)

    def process(
        self,
        spec: PartitionSpec,
        finalizer: Any = beam.DoFn.BundleFinalizerParam,
        tracker: RestrictionTrackerView = _RESTRICTION,  # type: ignore[assignment]  # Beam's DoFn-param idiom
        watermark: ManualWatermarkEstimator = _WATERMARK,  # type: ignore[assignment]
    ) -> Iterator[KafkaRecord]:
        tp, position = yield from self._claimed_read(spec, tracker, watermark)
        if self._commit_due(tp, position):
            finalizer.register(lambda: self._commit(tp, position))

    def _claimed_read(
        self, spec: PartitionSpec, tracker: RestrictionTrackerView, watermark: ManualWatermarkEstimator
    ) -> Generator[KafkaRecord, None, tuple[TopicPartition, int]]:
        tp = TopicPartition(spec.topic, spec.partition)
        if tp in self._fenced:
            raise partition_owner.PartitionOwnedError(self._fenced[tp])
        self._keeper.hold(tp)
        start = tracker.current_restriction().start
        position = yield from self._read(spec, tp, start, tracker, watermark)
        return tp, position

    def _read(
        self,
        spec: PartitionSpec,
        tp: TopicPartition,
        position: int,
        tracker: RestrictionTrackerView,
        watermark: ManualWatermarkEstimator,
    ) -> Generator[KafkaRecord, None, int]:
        """Yield claimed records; return the next offset to read (what the group may commit)."""
        limits = self._pipeline
        streaming = spec.stop is None
        reader = self._reader(tp)
        if reader.position(tp) != position:  # a seek drops the fetch in flight: only when the position moved
            reader.seek(tp, position)
        # Stream mode: the budget runs from the first record read; drain mode: from the start of the bundle.
        deadline = None if streaming else time.monotonic() + limits.max_bundle_seconds
        emitted = 0
        read = INGEST.records_read.labels(tp.topic)
        while True:
            stop = tracker.current_restriction().stop
            if position >= stop or self._stopping():
                tracker.try_claim(stop)  # past the end: marks the restriction done
                return position
            if emitted >= limits.max_records_per_bundle or (deadline is not None and time.monotonic() >= deadline):
                tracker.defer_remainder()
                return position
            timeout_ms = self._idle_poll_ms if streaming and not emitted else limits.poll_timeout_ms
            batch = reader.poll(timeout_ms=timeout_ms, max_records=limits.max_records_per_bundle - emitted)
            records = batch.get(tp, [])
            if not records:
                next_offset = reader.position(tp)
                if next_offset is not None and next_offset > position:
                    # Offsets the broker will never hand over (a compacted gap, transaction markers, an aborted
                    # transaction's records), passed by the client without a record: claimed, so the commit moves
                    # past them (a drain reaches its stop; a caught-up stream's lag falls to 0).
                    if next_offset < stop and not tracker.try_claim(next_offset - 1):
                        return position
                    position = next_offset
                    if position >= stop:
                        continue
                if streaming:
                    watermark.set_watermark(max(watermark.current_watermark() or Timestamp(0), Timestamp.now()))
                    tracker.defer_remainder(Duration.of(IDLE_RECHECK_S))
                    return position
                continue
            if deadline is None:
                deadline = time.monotonic() + limits.max_latency_ms / 1000
            before = emitted
            for record in records:
                if streaming and emitted and time.monotonic() >= deadline:
                    break  # the budget is spent (downstream encodes as windows fill): end the bundle here
                if not tracker.try_claim(record.offset):
                    read.inc(emitted - before)
                    return position
                position = record.offset + 1
                emitted += 1
                if record.timestamp is not None and record.timestamp >= 0:
                    # never past now: a producer's clock far in the future must not end the stream's time
                    stamp = min(Timestamp.of(record.timestamp / 1000), Timestamp.now())
                    current = watermark.current_watermark()
                    if current is None or stamp > current:
                        watermark.set_watermark(stamp)
                # model_construct: kafka-python already gives these exact types; validation would cost µs/record.
                yield KafkaRecord.model_construct(
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    headers=tuple((k, v if v is not None else b"") for k, v in (record.headers or ())),
                    timestamp_ms=record.timestamp if record.timestamp is not None and record.timestamp >= 0 else None,
                )
            read.inc(emitted - before)  # once a poll: the counter is per partition's topic, not per record
            if streaming and self._caught_up(reader, tp, position):
                tracker.defer_remainder()  # nothing more to wait for: end the bundle, make it durable now
                return position

    @staticmethod
    def _caught_up(reader: KafkaConsumer, tp: TopicPartition, position: int) -> bool:
        """Has the reader reached the partition's high watermark (as of the last fetch response)?"""
        high = reader.highwater(tp)
        return high is not None and position >= high


@beam.DoFn.unbounded_per_element()
class _ReadPartitionUnbounded(_ReadPartition):
    """The same reader, declared unbounded so runners treat stream mode as a streaming source."""


class _ReadPartitionCommitAtEnd(_ReadPartition):
    """A bounded read that asks for no bundle finalizer, for runners that refuse one in batch mode (Beam's
    portable Flink runner: "doesn't support bundle finalization in batch mode", apache/beam#19526). It commits
    nothing while it runs; the launcher commits every partition's stop offset once the job has succeeded
    (``finish_partitions``), and a drain that fails is read again from the last commit."""

    def process(  # type: ignore[override]  # the same element and restriction, without the finalizer
        self,
        spec: PartitionSpec,
        tracker: RestrictionTrackerView = _RESTRICTION,  # type: ignore[assignment]  # Beam's DoFn-param idiom
        watermark: ManualWatermarkEstimator = _WATERMARK,  # type: ignore[assignment]
    ) -> Iterator[KafkaRecord]:
        yield from self._claimed_read(spec, tracker, watermark)


class ReadKafkaPartitions(beam.PTransform[beam.pvalue.PBegin, beam.pvalue.PCollection[KafkaRecord]]):
    """Read the given partitions; bounded when every spec has a ``stop``, unbounded otherwise."""

    def __init__(
        self,
        kafka: KafkaSettings,
        pipeline: PipelineSettings,
        partitions: list[PartitionSpec],
        run_id: str,
        stop: Handle[threading.Event] | None = None,
        finalize: bool = True,
    ) -> None:
        """``finalize``: commit offsets in bundle finalization (False: a bounded read on a runner that refuses
        bundle finalizers in batch mode; the launcher commits at the end)."""
        super().__init__()
        self._kafka = kafka
        self._pipeline = pipeline
        self._partitions = partitions
        self._run_id = run_id
        self._stop = stop
        self._finalize = finalize

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.PCollection[KafkaRecord]:
        bounded = all(p.stop is not None for p in self._partitions)
        reader: type[_ReadPartition] = _ReadPartitionUnbounded
        if bounded:
            reader = _ReadPartition if self._finalize else _ReadPartitionCommitAtEnd
        idle_ms = idle_poll_ms(self._pipeline, len(self._partitions))
        records: beam.pvalue.PCollection[KafkaRecord] = (
            pbegin
            | "Partitions" >> beam.Create(self._partitions)
            | "ReadPartition" >> beam.ParDo(reader(self._kafka, self._pipeline, self._run_id, idle_ms, self._stop))
        )
        return records
