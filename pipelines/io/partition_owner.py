"""One live reader per partition: ownership claims kept by the broker, in a consumer group of their own.

Readers assign partitions by hand (no group membership: it is slow to join and tansu's groups of 3+ never
settle), so nothing in Kafka stops two ingest processes on one group from both reading every partition —
and then a lagging one rewrites older versions of points and moves committed offsets backwards. So each
partition has a claim: the committed "offset" of that partition in the group ``<group_id>.owners``, which
packs a 20-bit tag of the owning run and the unix second of its last beat (``Claim.encode``). Commit
metadata would be the natural carrier, but tansu drops it; an offset in a side group survives on every
Kafka-protocol broker and needs nothing but the consumer-group API. Readers beat at least every
``reader_heartbeat_s`` (an idle partition re-commits its offset), and:

* **at start** (``claim``), a partition whose claim names another owner that beat within the lease
  (3 heartbeats) is watched for two heartbeats: if its beat moves, a live reader holds it and the run is
  refused (``PartitionOwnedError``, naming ``--shard``); if not, its owner died (kill -9) and the partition is
  taken over. The claim commits the resolved start offset at once — so ``auto_offset_reset = latest`` cannot
  skip what arrives between a start and its first commit;
* **at every commit** (``commit``), the claim is read first: if another owner has claimed the partition
  since, this reader is fenced and stops instead of overwriting the newer commit;
* **while it reads** (``ClaimKeeper``, a thread beside each reader), the claim is renewed every heartbeat whether or
  not a bundle is running, so a long bundle, a slow store call or a GC pause does not look like a dead reader;
  the keeper stops renewing a partition that another owner has claimed and marks it lost;
* **before every store write** (``Fence.check``, called by the point writer), the claim is read (at most once a
  heartbeat per partition while the process runs): a reader that has lost its partition fails its bundle instead
  of writing. A reader paused between that check and its write cannot go backwards either: its writes carry
  older versions, which the store's conditional writes refuse (``pipelines.stores``);
* **at a clean end** (``release``), the claim's beat is zeroed so that the next reader starts at once.

Two instances started within the same second can both pass the start check; the commit fence then stops
the one that commits second. Where a broker offers it, group membership would close that window.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from embedstream.pipelines.io.kafka_clients import consumer
from embedstream.schemas.errors import EmbedstreamError
from embedstream.schemas.settings import KafkaSettings

log = logging.getLogger(__name__)
LEASE_BEATS = 3
BEAT_BITS = 34  # unix seconds until the year 2514
TAG_MASK = (1 << 20) - 1


class PartitionOwnedError(EmbedstreamError):
    """Another live reader holds a partition this run was asked to read."""


def new_owner_id() -> str:
    """A run's identity in commit metadata: host, process and a random part (a restart is a new owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Claim:
    """A partition's owner (a tag of its run id) and the unix second of its last beat (0: released)."""

    tag: int
    beat: int

    @staticmethod
    def of(owner: str, beat: float) -> Claim:
        return Claim(zlib.crc32(owner.encode()) & TAG_MASK, int(beat))

    def encode(self) -> int:
        return (self.tag << BEAT_BITS) | self.beat

    @staticmethod
    def decode(offset: int | None) -> Claim | None:
        if offset is None or offset < 0:
            return None
        return Claim(offset >> BEAT_BITS, offset & ((1 << BEAT_BITS) - 1))


class Owners:
    """The claims of one group's partitions, through a consumer of ``<group_id>.owners`` (``owners_client``)."""

    def __init__(self, client: KafkaConsumer, group: str, owner: str) -> None:
        self._client = client
        self.group = group
        self.owner = owner
        self.mine = Claim.of(owner, 0).tag

    def close(self) -> None:
        self._client.close()

    def current(self, tp: TopicPartition) -> Claim | None:
        return Claim.decode(self._client.committed(tp))

    def other(self, tp: TopicPartition) -> Claim | None:
        """The claim of another owner on ``tp`` (None when it is ours or nobody's)."""
        found = self.current(tp)
        return found if found is not None and found.tag != self.mine else None

    def beat(self, partitions: list[TopicPartition], beat: float | None = None) -> None:
        stamp = Claim(self.mine, int(time.time()) if beat is None else int(beat)).encode()
        self._client.commit({tp: OffsetAndMetadata(stamp, "", -1) for tp in partitions})

    def describe(self, tp: TopicPartition, claim: Claim) -> str:
        return (
            f"partition {tp.topic}:{tp.partition} of group {self.group!r} is being read by another ingest (it "
            f"beat {time.time() - claim.beat:.0f}s ago). Two readers of one partition rewrite each other's points "
            "and move its offset backwards: give each instance its own partitions with --shard I/N (or "
            "EMBEDSTREAM_PIPELINE__SHARD), use another kafka.group_id, or stop the other reader"
        )


def owners_group(group: str) -> str:
    return f"{group}.owners"


def claim(
    client: KafkaConsumer,
    owners: Owners,
    starts: dict[TopicPartition, int],
    heartbeat_s: float,
) -> None:
    """Take ownership of ``starts``' partitions and commit their start offsets; refuse live foreign readers."""
    lease = LEASE_BEATS * heartbeat_s + 1
    fresh = {}
    for tp in starts:
        other = owners.other(tp)
        if other is not None and time.time() - other.beat < lease:
            fresh[tp] = other
    if fresh:
        log.info("%d partitions were claimed by another reader lately; checking it is gone", len(fresh))
        time.sleep(max(2 * heartbeat_s, 2.0) + 0.5)
        for tp, before in fresh.items():
            now = owners.other(tp)
            if now is not None and now.beat > before.beat:
                raise PartitionOwnedError(owners.describe(tp, now))
        log.info("the previous reader stopped beating; taking over its partitions")
    owners.beat(list(starts))
    client.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in starts.items()})


def commit(client: KafkaConsumer, owners: Owners, tp: TopicPartition, offset: int) -> None:
    """Commit ``offset`` and beat, unless another owner claimed the partition since (then raise)."""
    other = owners.other(tp)
    if other is not None:
        raise PartitionOwnedError(owners.describe(tp, other))
    client.commit({tp: OffsetAndMetadata(offset, "", -1)})
    owners.beat([tp])


def release(owners: Owners, tp: TopicPartition) -> None:
    """At a clean end: zero this run's beat on ``tp`` (left alone if another owner claimed it since)."""
    if owners.other(tp) is None:
        owners.beat([tp], beat=0)


def owners_for(settings: KafkaSettings, owner: str) -> Owners:
    """A claims handle for ``settings.group_id`` as run ``owner`` (close it when done)."""
    claims = consumer(settings.model_copy(update={"group_id": owners_group(settings.group_id)}), 1 << 20, group=True)
    return Owners(claims, settings.group_id, owner)


class Fence:
    """Before a store write: does this run still own the partitions the write's events came from?

    A confirmation is trusted for one heartbeat of this process's monotonic clock (which runs on while the
    process is paused, so a resumed reader checks again): a live reader keeps beating, so no other reader can
    take its partition within that time without the claim showing it."""

    def __init__(self, settings: KafkaSettings, owner: str, heartbeat_s: float) -> None:
        self._settings, self._owner, self._fresh_s = settings, owner, heartbeat_s
        self._owners: Owners | None = None
        self._confirmed: dict[TopicPartition, float] = {}

    def check(self, partitions: set[tuple[str, int]]) -> None:
        """Raise ``PartitionOwnedError`` if another owner has claimed one of ``partitions`` (topic, partition)."""
        now = time.monotonic()
        for topic, partition in partitions:
            tp = TopicPartition(topic, partition)
            if now - self._confirmed.get(tp, -self._fresh_s) < self._fresh_s:
                continue
            if self._owners is None:
                self._owners = owners_for(self._settings, self._owner)
            other = self._owners.other(tp)
            if other is not None:
                raise PartitionOwnedError(f"{self._owners.describe(tp, other)}; this reader lost it and stops")
            self._confirmed[tp] = now

    def close(self) -> None:
        if self._owners is not None:
            self._owners.close()
            self._owners = None


class ClaimKeeper:
    """Renews this run's claims on the partitions it reads every heartbeat, on a thread of its own with its own
    client (kafka-python consumers are not thread-safe), so a bundle that runs longer than the lease is not taken
    for a dead reader. A partition another owner has claimed is not renewed (``lost`` is told once)."""

    def __init__(
        self,
        settings: KafkaSettings,
        owner: str,
        heartbeat_s: float,
        lost: Callable[[TopicPartition, str], None],
        ending: Callable[[], bool] = lambda: False,
    ) -> None:
        """``ending``: true once the run is stopping (its claims are about to be released: beat no more)."""
        self._settings, self._owner, self._every_s, self._lost = settings, owner, heartbeat_s, lost
        self._ending = ending
        self._held: set[TopicPartition] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claim-keeper", daemon=True)
        self._thread.start()

    def hold(self, tp: TopicPartition) -> None:
        with self._lock:
            self._held.add(tp)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._every_s + 5)

    def _run(self) -> None:
        owners: Owners | None = None
        try:
            while not self._stop.wait(self._every_s):
                try:
                    owners = owners or owners_for(self._settings, self._owner)
                    self._beat(owners)
                except Exception as exc:  # the broker is away: the next beat tries again (the lease is 3 beats)
                    log.info("claim renewal failed (%s); retrying at the next heartbeat", exc)
        finally:
            if owners is not None:
                owners.close()

    def _beat(self, owners: Owners) -> None:
        with self._lock:
            held = sorted(self._held)
        mine = []
        for tp in held:
            other = owners.other(tp)
            if other is None:
                mine.append(tp)
                continue
            with self._lock:
                self._held.discard(tp)
            self._lost(tp, owners.describe(tp, other))
        if mine and not self._ending():
            owners.beat(mine)
