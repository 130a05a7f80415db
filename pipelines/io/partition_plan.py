"""Which partitions a run reads, from where to where, claimed for this run; and releasing them at its end.

Apart from ``kafka_clients`` because planning takes ownership claims (``partition_owner``), and the claims are
kept with a consumer that ``kafka_clients`` makes: imports flow kafka_clients ← partition_owner ← partition_plan.
"""

from __future__ import annotations

from kafka import TopicPartition

from embedstream.pipelines.io import partition_owner
from embedstream.pipelines.io.kafka_clients import PartitionSpec, consumer, high_watermarks, shard_partitions
from embedstream.schemas.settings import KafkaSettings


def plan_partitions(
    settings: KafkaSettings,
    max_event_bytes: int,
    bounded: bool,
    owner: str,
    heartbeat_s: float,
    shard: tuple[int, int] = (0, 1),
    known: frozenset[tuple[str, int]] | None = None,
) -> list[PartitionSpec]:
    """Where each partition's read starts (the group's committed offset, else the reset policy) and ends.

    Only the shard's partitions (``p % N == I`` for ``shard = (I, N)``) are planned. The start offsets are
    committed at once with this run's ownership claim (``partition_owner.claim``): a partition another live
    reader holds is refused, and with ``auto_offset_reset = latest`` a crash before the first bundle's commit
    cannot skip the events that arrived meanwhile. ``known``: the ``(topic, partition)``s this run planned before
    (None on its first plan); a partition not among them appeared while the run streamed, and without a committed
    offset it starts at its beginning whatever the reset policy, because every record in it arrived after the run
    began (Flink's Kafka source does the same); ``latest`` would skip what producers wrote between the partition's
    creation and its discovery. Decided on this plan's own listing, so a partition created a moment ago counts."""
    client = consumer(settings, max_event_bytes, group=True)
    try:
        partitions = sorted(shard_partitions(client, settings, shard))
        if not partitions:
            return []
        marks = high_watermarks(settings, partitions)
        client.assign(partitions)
        client.seek_to_beginning(*partitions)
        starts = {}
        for tp in partitions:
            committed = client.committed(tp)
            if committed is None:
                appeared = known is not None and (tp.topic, tp.partition) not in known
                from_start = settings.auto_offset_reset == "earliest" or appeared
                committed = client.position(tp) if from_start else marks[tp]
            starts[tp] = int(committed)
        owners = partition_owner.owners_for(settings, owner)
        try:
            partition_owner.claim(client, owners, starts, heartbeat_s)
        finally:
            owners.close()
        return [PartitionSpec(tp.topic, tp.partition, starts[tp], marks[tp] if bounded else None) for tp in partitions]
    finally:
        client.close()


def finish_partitions(settings: KafkaSettings, specs: list[PartitionSpec], owner: str, completed: bool) -> None:
    """After the pipeline has ended, release this run's partitions; when a bounded run ``completed``
    successfully, first commit each partition's stop offset (fenced like every commit).

    Runners that never finalize bundles (Flink batch, Spark, Dask) commit nothing while they run; this is
    what moves their group forward. On the others it repeats what finalization already committed."""
    client = consumer(settings, 1 << 20, group=True)
    owners = partition_owner.owners_for(settings, owner)
    try:
        for spec in specs:
            tp = TopicPartition(spec.topic, spec.partition)
            if completed and spec.stop is not None:
                partition_owner.commit(client, owners, tp, spec.stop)
            partition_owner.release(owners, tp)
    finally:
        client.close()
        owners.close()
