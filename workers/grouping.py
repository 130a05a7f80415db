"""Search results grouped by what they belong to: a document's chunks under the document, a video's frames and
audio segments under the video.

A long text is stored as chunk points — passages, and sentences inside them — and a document point
(``pipelines.transforms.documents``), so one fact can match a sentence, its passage and its document at once.
A plain search shows such nested hits once (``distinct_passages``) and says where each chunk lies
(``passage_of``). Grouped search asks the store for more candidates (``candidates``: ``GROUP_DEPTH`` per group
wanted, at least ``MIN_CANDIDATES``), groups them by their owner, ranks the groups by their best hit, and gives
each group its owner's point (fetched when no hit was the owner itself) and its best passages that do not nest
— chunks with their character offsets in the document, which a reader highlights. The same rule on both stores
(qdrant-edge has no group-by of its own; the server's ``query_points_groups`` would group the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from embedstream.pipelines.stores import Hit, StoredPoint
from embedstream.schemas.point import CHUNK_MODALITY, point_id

GROUP_DEPTH = 8  # candidates asked for per group wanted: a document's chunks may fill several places each
MIN_CANDIDATES = 50  # even for one group: the passage that answers may rank low in one of hybrid's two lists
MAX_CANDIDATES = 400


def candidates(limit: int) -> int:
    """How many hits a grouped search asks the store for, to fill ``limit`` groups."""
    return min(max(limit * GROUP_DEPTH, MIN_CANDIDATES), MAX_CANDIDATES)


PASSAGES = (CHUNK_MODALITY, "video_frame", "video_audio")  # the points that are parts of another


@dataclass(frozen=True)
class Passage:
    """A hit inside its owner: a chunk (with ``start``/``end``, characters in the document) or a video member."""

    id: str
    score: float
    payload: dict[str, Any]

    @property
    def start(self) -> int | None:
        return self.payload.get("start")

    @property
    def end(self) -> int | None:
        return self.payload.get("end")


@dataclass
class Group:
    """One document (or video, or single point) and its best passages; ``score`` is its best hit's."""

    key: tuple[str, str]
    score: float
    owner_id: str
    owner: dict[str, Any] | None = None
    passages: list[Passage] = field(default_factory=list)


def owner_of(payload: dict[str, Any]) -> tuple[tuple[str, str], str | None]:
    """A hit's group key, and the point id of the group's owner (None: the hit is its own group)."""
    if payload.get("doc_id") is not None or payload.get("modality") == "text":
        doc = str(payload.get("doc_id") or payload.get("id"))
        return ("document", doc), point_id("text", doc)
    if payload.get("video_id") is not None:
        video = str(payload["video_id"])
        return ("video", video), point_id("video", video)
    return (str(payload.get("modality")), str(payload.get("id"))), None


def _nested(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """Do two chunks nest (one's characters hold the other's: a sentence and the passage around it)? Anything
    that is not a chunk with its offsets — a video's members, a document's own point — never does."""
    first, second = _offsets(one), _offsets(other)
    if first is None or second is None:
        return False
    (a, b), (x, y) = first, second
    return (x <= a and b <= y) or (a <= x and y <= b)


def _offsets(payload: dict[str, Any]) -> tuple[int, int] | None:
    start, end = payload.get("start"), payload.get("end")
    if payload.get("modality") != CHUNK_MODALITY or not isinstance(start, int) or not isinstance(end, int):
        return None
    return start, end


def distinct_passages(hits: Sequence[Hit], limit: int) -> list[Hit]:
    """The first ``limit`` answers among ``hits`` (best first), where hits of one long text that say the same
    thing count once: a chunk is dropped when a better chunk of its document nests with it (a sentence and the
    passage around it), and a document's own point gives its place to the document's best chunk among the hits
    (which then carries the better of the two scores: the chunk says where in the document the match is), or
    is dropped when a chunk of it is already shown. A document's point with no chunk among the hits stays as it
    is, and so do disjoint passages of one document, short texts and every other hit (a video's frames are
    different moments, not nested passages)."""
    chunks: dict[tuple[str, str], list[Hit]] = {}  # each document's chunks that nest with no better one, best first
    for hit in hits:
        if hit.payload.get("modality") == CHUNK_MODALITY:
            kept = chunks.setdefault(owner_of(hit.payload)[0], [])
            if not any(_nested(hit.payload, other.payload) for other in kept):
                kept.append(hit)
    distinct = {c.id for kept in chunks.values() for c in kept}
    answers: list[Hit] = []
    shown: set[str] = set()
    for hit in hits:
        payload = hit.payload
        if payload.get("modality") == CHUNK_MODALITY:
            answer = hit if hit.id in distinct else None
        elif payload.get("modality") == "text" and payload.get("chunks"):  # a long text's own point
            parts = chunks.get(owner_of(payload)[0], [])
            if any(c.id in shown for c in parts):  # the document is already answered, where it matched best
                answer = None
            else:
                answer = Hit(parts[0].id, max(hit.score, parts[0].score), parts[0].payload) if parts else hit
        else:
            answer = hit
        if answer is None or answer.id in shown:
            continue
        shown.add(answer.id)
        answers.append(answer)
        if len(answers) == limit:
            break
    return answers


def passage_of(payload: dict[str, Any]) -> dict[str, Any] | None:
    """Where a chunk hit lies — its document's id and point, its characters ``[start, end)`` in the document and
    its level (``passage`` or ``sentence``) — or None for a hit that is not part of a document. A plain search
    answers with it beside each hit, so a chunk never hides which document it belongs to."""
    if payload.get("modality") != CHUNK_MODALITY or payload.get("doc_id") is None:
        return None
    doc = str(payload["doc_id"])
    return {
        "id": doc,
        "point_id": point_id("text", doc),
        "start": payload.get("start"),
        "end": payload.get("end"),
        "level": payload.get("level", "passage"),
    }


def describe_hits(hits: Sequence[Hit], width: int = 200) -> str:
    """Lines for a terminal: each hit's rank, score, modality and id, then — for a chunk — its document and
    characters there, and a snippet of its text (or its uri)."""
    if not hits:
        return "no results"
    lines = []
    for rank, hit in enumerate(hits, start=1):
        payload = hit.payload
        where = passage_of(payload)
        about = f"[{payload.get('modality', '?')}] {payload.get('id')}"
        if where is not None:
            about = f"[{where['level']} of document] {where['id']} chars {where['start']}–{where['end']}:"
        shown = snippet(str(payload.get("text") or payload.get("uri") or ""), width)
        lines.append(f"{rank:>2}. {hit.score:.3f}  {about}  {shown}")
    return "\n".join(lines)


def group_hits(
    hits: Sequence[Hit], limit: int, per_group: int, fetch: Callable[[list[str]], list[StoredPoint]]
) -> list[Group]:
    """The ``limit`` best groups of ``hits`` (best first), each with at most ``per_group`` passages (best
    first); ``fetch`` retrieves the owners no hit was."""
    groups: dict[tuple[str, str], Group] = {}
    for hit in hits:
        key, owner_id = owner_of(hit.payload)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(key, hit.score, owner_id or hit.id)
        group.score = max(group.score, hit.score)
        if hit.id == group.owner_id:
            group.owner = hit.payload
        elif (
            hit.payload.get("modality") in PASSAGES
            and len(group.passages) < per_group
            and not any(_nested(hit.payload, p.payload) for p in group.passages)  # a sentence in a shown passage
        ):
            group.passages.append(Passage(hit.id, hit.score, hit.payload))
    best = sorted(groups.values(), key=lambda g: g.score, reverse=True)[:limit]
    missing = [g.owner_id for g in best if g.owner is None]
    if missing:
        found = {p.id: p.payload for p in fetch(missing)}
        for group in best:
            if group.owner is None:
                group.owner = found.get(group.owner_id)
    return best


def snippet(text: str, width: int = 150) -> str:
    """One line of at most ``width`` characters: white space folded, the rest cut with an ellipsis (a long
    document's text is shown as its start)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def groups_as_json(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """The groups as the API's ``/search/documents`` gives them (``DocumentOut``)."""
    return [
        {
            "kind": g.key[0],
            "id": g.key[1],
            "score": g.score,
            "point_id": g.owner_id,
            "payload": g.owner,
            "passages": [{"id": p.id, "score": p.score, "payload": p.payload} for p in g.passages],
        }
        for g in groups
    ]


def describe_groups(groups: Sequence[Group], width: int = 150) -> str:
    """Lines for a terminal: each group's rank, score, kind and id, then its passages with their character
    offsets in the document and a snippet (or, without passages, the start of its text)."""
    if not groups:
        return "no results"
    lines = []
    for rank, group in enumerate(groups, start=1):
        owner = group.owner or {}
        text = owner.get("text") if isinstance(owner.get("text"), str) else None
        facts = [f"{owner['chunks']} chunk points"] if owner.get("chunks") else []
        facts += [f"{len(text)} characters"] if text else []
        about = f"  ({', '.join(facts)})" if facts else ""
        lines.append(f"{rank:>2}. {group.score:.3f}  [{group.key[0]}] {group.key[1]}{about}")
        if not group.passages and text:
            lines.append(f"      {snippet(text, width)}")
        for passage in group.passages:
            where = f"chars {passage.start}–{passage.end}" if passage.start is not None else passage.payload.get("id")
            lines.append(f"      {passage.score:.3f} {where}: {snippet(str(passage.payload.get('text') or ''), width)}")
    return "\n".join(lines)
