"""What each command does, as a typed function of its options (the parser only parses).

A command's parameters are named as its options' destinations; ``settings`` (loaded from ``--config``, the
environment and the TOML file) and ``beam_args`` (the options embedstream does not know, passed on to Beam)
are filled in by the dispatcher. Each returns the exit status. Errors are raised, never printed: the
dispatcher prints the project's own errors as one line (``EmbedstreamError``) and lets anything else surface
as a traceback, because that is a bug.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from embedstream.schemas.errors import UsageError
from embedstream.schemas.settings import Settings

if TYPE_CHECKING:
    pass


def broker(
    action: Literal["start", "stop", "status", "run"], host: str, port: int, advertise: str | None, storage: str
) -> int:
    from embedstream.workers import broker as local

    if action == "run":
        local.run_broker_foreground(host, port, advertise, storage)  # returns only by failing
    if action == "start":
        running = local.load_state()
        if running is not None:
            print(running.bootstrap)
            print(f"already running (pid {running.pid})", file=sys.stderr)
            return 0
        started = local.start_broker(port=port, host=host, storage=storage)
        local.save_state(started)
        print(started.bootstrap)
        if started.bootstrap != "127.0.0.1:9092":
            print(f"export EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS={started.bootstrap}", file=sys.stderr)
        return 0
    running = local.load_state()
    if action == "status":
        print(f"running at {running.bootstrap} (pid {running.pid})" if running else "not running")
        return 0 if running else 1
    if running is None:
        print("not running")
        return 0
    running.stop()
    local.clear_state()
    print(f"stopped broker at {running.bootstrap}")
    return 0


def produce(
    settings: Settings,
    paths: list[str],
    topic: str | None,
    fps: float,
    scene_threshold: float | None,
    segment_seconds: float,
    quiet: bool,
) -> int:
    from embedstream.pipelines.media.video import VideoOptions
    from embedstream.workers.produce import produce_files

    if topic:
        settings = settings.replace(kafka={"topic": topic})
    video = VideoOptions(fps=fps, scene_threshold=scene_threshold, segment_seconds=segment_seconds)
    report = produce_files(settings, [Path(p) for p in paths], progress=not quiet, video=video)
    print(f"sent {report.sent} events to {settings.kafka.topic}; skipped {len(report.skipped)} invalid input(s)")
    return 0


def delete(settings: Settings, ids: list[str], modality: str | None, topic: str | None) -> int:
    from embedstream.schemas.envelope import Modality
    from embedstream.workers.produce import produce_deletes

    if topic:
        settings = settings.replace(kafka={"topic": topic})
    sent = produce_deletes(settings, ids, Modality(modality) if modality else None)
    what = f"{modality} deletes" if modality else "tombstones"
    print(f"sent {sent} {what} to {settings.kafka.topic}; the ingest removes what they name")
    return 0


def ingest(
    settings: Settings,
    beam_args: list[str],
    mode: Literal["drain", "stream"],
    shard: str | None,
    skip: list[str],
    metrics_port: int | None,
    metrics_host: str | None,
) -> int:
    from embedstream.pipelines.ingest import run_ingest

    flags: dict[str, Any] = {"mode": mode, "skip": [*settings.pipeline.skip, *skip]}
    for name, value in (("shard", shard), ("metrics_port", metrics_port), ("metrics_host", metrics_host)):
        if value is not None:
            flags[name] = value
    settings = settings.replace(pipeline=flags)  # checked like every setting (the shard's I/N)
    result = run_ingest(settings, beam_args)
    views = f", {result.video_views} video view updates" if result.video_views else ""
    deleted = f", {result.deletions} deletions" if result.deletions else ""
    print(f"{result.points_upserted} points upserted, {result.dead_letters} dead letters{views}{deleted}")
    return 0


def search(
    settings: Settings,
    query: str | None,
    text: str | None,
    image: str | None,
    audio: str | None,
    space: str | None,
    modality: str | None,
    k: int,
    where: list[str],
    as_json: bool,
    mode: Literal["auto", "dense", "sparse", "hybrid"] | None,
    documents: bool = False,
    per_document: int = 3,
    diversity: float = 0.0,
) -> int:
    from embedstream.workers.grouping import describe_hits, passage_of
    from embedstream.workers.search import Query, parse_where, search_documents_once, search_once

    given = [q for q in (query, text, image, audio) if q]
    if len(given) != 1:
        raise UsageError("search takes one query: a text (positional or --text), --image FILE or --audio FILE")
    if image:
        asked = Query.of_image(Path(image).read_bytes())
    elif audio:
        asked = Query.of_audio(Path(audio).read_bytes())
    else:
        asked = Query.of_text(query or text or "")
    if documents:
        from embedstream.workers.grouping import describe_groups, groups_as_json

        groups = search_documents_once(
            settings, asked, space, k, parse_where(where), modality, mode, per_document, diversity
        )
        print(json.dumps(groups_as_json(groups), ensure_ascii=False) if as_json else describe_groups(groups))
        return 0
    hits = search_once(settings, asked, space, k, parse_where(where), modality, mode, diversity)
    if as_json:
        found = [{"id": h.id, "score": h.score, "document": passage_of(h.payload), "payload": h.payload} for h in hits]
        print(json.dumps(found, ensure_ascii=False))
        return 0
    print(describe_hits(hits))
    return 0


def models(
    settings: Settings,
    action: Literal["list", "build", "info", "verify", "export", "import-vectors"],
    name: str,
    force: bool,
    quantize: bool,
    per_tensor: bool,
    source: str | None,
    pooling: Literal["mean", "cls", "last_token"],
    no_normalize: bool,
    file: str | None,
    binary: bool,
    arch: Literal["vgg11", "vgg16", "resnet50"] | None,
    space: str | None,
) -> int:
    from embedstream.workers import models_cmd

    cache = settings.model.cache_dir
    if action == "list":
        return models_cmd.list_models(cache)
    if action == "build":
        return models_cmd.build(cache, name, force=force, quantize=quantize, per_channel=not per_tensor)
    if action == "info":
        return models_cmd.info(cache, name)
    if action == "verify":
        return models_cmd.verify(cache, name)
    if action == "export":
        if not source:
            raise UsageError("models export needs --source (a model folder, or an id already in the local HF cache)")
        if arch:
            return models_cmd.export_checkpoint(cache, name, Path(source), arch, not no_normalize, space)
        return models_cmd.export(cache, name, source, pooling, not no_normalize, space)
    if not file:
        raise UsageError("models import-vectors needs --file PATH (word2vec text/binary or GloVe)")
    return models_cmd.import_vectors(cache, name, Path(file), binary=binary or None)


def serve(settings: Settings, host: str, port: int, ingest: bool, stop_timeout: float, insecure: bool) -> int:
    from embedstream.workers.serve import serve as run_server

    scheme = "https" if settings.api.tls_certfile else "http"
    where = f"{scheme}://{host}:{port}/"
    if insecure and not settings.api.keys:
        print(f"warning: serving on {host} without API keys (--insecure)", file=sys.stderr)
    print(f"serving {where} (API docs at {where}docs){' and ingesting in stream mode' if ingest else ''}")
    run_server(settings, host, port, ingest=ingest, stop_timeout_s=stop_timeout, insecure=insecure)
    return 0


def api_key(action: Literal["new"], name: str, scope: Literal["read", "admin"]) -> int:
    from embedstream.workers.api.auth import key_hash, new_key

    key = new_key()
    entry = {"name": name, "sha256": key_hash(key), "scope": scope}
    print(f"key (give it to {name}; it is not stored anywhere): {key}")
    print("add to embedstream.toml:")
    print(f'[[api.keys]]\nname = "{name}"\nsha256 = "{entry["sha256"]}"\nscope = "{scope}"')
    print(f"or to EMBEDSTREAM_API__KEYS (a JSON list): {json.dumps([entry])}")
    return 0


def cluster(
    settings: Settings,
    space: str,
    k: str,
    k_max: int,
    method: Literal["kmeans", "hdbscan"],
    where: list[str],
    plot: str | None,
    quiet: bool,
) -> int:
    from embedstream.workers.cluster import cluster_space
    from embedstream.workers.search import parse_where

    if k != "auto" and not k.isdigit():
        raise UsageError(f"--k takes a number of clusters or auto, not {k!r}")
    clusters: int | Literal["auto"] = "auto" if k == "auto" else int(k)
    report = cluster_space(
        settings,
        space,
        clusters,
        method,
        parse_where(where),
        k_max=k_max,
        plot=Path(plot) if plot else None,
        progress=not quiet,
    )
    silhouette = f", silhouette {report.silhouette:.3f}" if report.silhouette is not None else ""
    print(f"{report.points} points of {report.space} in {report.k} clusters ({report.method}{silhouette})")
    for group in report.clusters:
        label = "noise" if group.label < 0 else f"cluster {group.label}"
        print(f"  {label}: {group.size} points; nearest the centre:")
        for text in group.nearest:
            print(f"      · {text[:110]}")
    print(f"labels written to payload key cluster_{report.space}; picture: {report.plot}")
    return 0


def classify(
    settings: Settings,
    space: str,
    labels: str | None,
    examples: str | None,
    k: int,
    margin: float,
    where: list[str],
    as_json: bool,
    quiet: bool,
    spread: bool,
) -> int:
    from embedstream.workers.classify import classify_space
    from embedstream.workers.search import parse_where

    described = None
    if labels:
        try:
            described = json.loads(Path(labels).read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--labels {labels}: not a readable JSON file ({exc})") from exc
        if not isinstance(described, dict) or not all(isinstance(v, str) and v for v in described.values()):
            raise UsageError(f'--labels {labels}: expected a JSON object {{"label": "what it means", ...}}')
    report = classify_space(
        settings, space, described, examples, k, margin, parse_where(where), not quiet, spread=spread
    )
    if as_json:
        print(
            json.dumps(
                {
                    "space": space,
                    "method": report.method,
                    "points": report.points,
                    "examples": report.examples,
                    "counts": dict(report.counts),
                },
                indent=2,
            )
        )
        return 0
    print(f"{report.points} points of {space!r} labelled ({report.method}; {report.examples} examples)")
    for label, count in report.counts.most_common():
        print(f"  {label:<24} {count}")
    return 0


def spaces(
    settings: Settings,
    action: Literal["list", "migrate", "switch", "rollback", "drop-old", "cancel"],
    space: str | None,
    to: str | None,
    as_json: bool,
    quiet: bool,
) -> int:
    from dataclasses import asdict

    from embedstream.pipelines.spaces import migration
    from embedstream.pipelines.spaces.reembed import RemakeFrom
    from embedstream.workers.spaces import migrate_here, run_step

    if action == "list":
        states = run_step(settings, migration.space_states)
        if as_json:
            print(json.dumps([asdict(s) for s in states], indent=2))
        for s in [] if as_json else states:
            moving = f" → {s.to_model}: {s.state}, {s.backfilled}/{s.points} filled" if s.to_model else ""
            print(f"{s.name:<12} {s.model or '-':<20} {s.points:>8} points, searched with {s.searched_model}{moving}")
        return 0
    if space is None:
        raise UsageError(f"spaces {action} needs the SPACE (see `embedstream spaces list`)")
    if action == "migrate":
        if not to:
            raise UsageError("spaces migrate needs --to MODEL (NAME or NAME@VERSION, built with `models build`)")
        filled = migrate_here(settings, space, to, progress=not quiet)
        print(f"space {space!r}: {filled} points filled with {to}; next: embedstream spaces switch {space}")
        return 0
    step: migration.Step = action
    spec = run_step(settings, lambda store: migration.take_step(store, RemakeFrom.of(settings), space, step))
    print(f"space {space!r}: {action} done; searches use {spec.searched[1]}")
    return 0


def store(settings: Settings, action: Literal["snapshot", "restore"], path: str) -> int:
    from embedstream.pipelines.stores import snapshot
    from embedstream.workers.spaces import run_step

    if action == "snapshot":
        info = run_step(settings, lambda opened: snapshot.take(opened, settings, Path(path)))
    else:
        info = snapshot.restore(settings, Path(path))
    models = ", ".join(info.models) or "none"
    print(f"{action}: {path} — collection {info.collection!r}, {info.points} points, models {models}")
    return 0


def dlq(settings: Settings, action: Literal["stats", "replay"], reason: list[str], to_topic: str | None) -> int:
    from embedstream.workers import dlq as dead_letters

    if action == "stats":
        counts = dead_letters.stats(settings)
        print(f"{sum(counts.values())} distinct dead letters on {settings.kafka.dead_letter_topic}")
        for code, count in counts.most_common():
            print(f"  {code:<22} {count}")
        return 0
    report = dead_letters.replay(settings, reason, to_topic)
    target = to_topic or settings.kafka.topic
    print(
        f"replayed {report.replayed} dead letters to {target} ({sum(report.by_reason.values())} distinct on the "
        f"topic, {report.already_replayed} replayed before, {report.unavailable} no longer retained at their source)"
    )
    return 0


def tail_embeddings(
    settings: Settings, topic: str | None, follow: bool, newest_only: bool, out: Path | None, limit: int | None
) -> int:
    from embedstream.workers import tail_embeddings as embeddings

    embeddings.run(settings, topic, follow, newest_only, out, limit)
    return 0


def demo(beam_args: list[str]) -> int:
    from embedstream.workers.demo import run_demo

    run_demo(beam_args=tuple(beam_args))
    return 0
