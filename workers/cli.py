"""The ``embedstream`` command: a thin layer over library calls that the tests also make.

Every known failure (no broker, model not built, store locked, collection mismatch, bad config) ends with
one line on stderr that says what to do, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedstream.schemas.errors import EmbedstreamError, UsageError
from embedstream.schemas.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(args.config)


def cmd_broker(args: argparse.Namespace, extra: list[str]) -> int:
    from embedstream.workers import broker as local

    if args.action == "run":
        local.run_broker_foreground(args.host, args.port, args.advertise)  # returns only by failing
    if args.action == "start":
        running = local.load_state()
        if running is not None:
            print(running.bootstrap)
            print(f"already running (pid {running.pid})", file=sys.stderr)
            return 0
        started = local.start_broker(port=args.port, host=args.host)
        local.save_state(started)
        print(started.bootstrap)
        if started.bootstrap != "127.0.0.1:9092":
            print(f"export EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS={started.bootstrap}", file=sys.stderr)
        return 0
    running = local.load_state()
    if args.action == "status":
        print(f"running at {running.bootstrap} (pid {running.pid})" if running else "not running")
        return 0 if running else 1
    if running is None:
        print("not running")
        return 0
    running.stop()
    local.clear_state()
    print(f"stopped broker at {running.bootstrap}")
    return 0


def cmd_produce(args: argparse.Namespace, extra: list[str]) -> int:
    from embedstream.pipelines.media.video import VideoOptions
    from embedstream.workers.produce import produce_files

    settings = _settings(args)
    if args.topic:
        settings = settings.replace(kafka={"topic": args.topic})
    video = VideoOptions(fps=args.fps, scene_threshold=args.scene_threshold, segment_seconds=args.segment_seconds)
    report = produce_files(settings, [Path(p) for p in args.paths], progress=not args.quiet, video=video)
    print(f"sent {report.sent} events to {settings.kafka.topic}; skipped {len(report.skipped)} invalid input(s)")
    return 0


def cmd_ingest(args: argparse.Namespace, extra: list[str]) -> int:
    from embedstream.pipelines.ingest import run_ingest

    settings = _settings(args)
    flags: dict[str, Any] = {"mode": args.mode, "skip": [*settings.pipeline.skip, *args.skip]}
    for name in ("shard", "metrics_port", "metrics_host"):
        if getattr(args, name) is not None:
            flags[name] = getattr(args, name)
    settings = settings.replace(pipeline=flags)  # checked like every setting (the shard's I/N)
    result = run_ingest(settings, extra)
    views = f", {result.video_views} video view updates" if result.video_views else ""
    print(f"{result.points_upserted} points upserted, {result.dead_letters} dead letters{views}")
    return 0


def cmd_search(args: argparse.Namespace, extra: list[str]) -> int:
    from embedstream.workers.search import Query, parse_where, search_once

    given = [q for q in (args.query, args.text, args.image, args.audio) if q]
    if len(given) != 1:
        raise UsageError("search takes one query: a text (positional or --text), --image FILE or --audio FILE")
    if args.image:
        query = Query.of_image(Path(args.image).read_bytes())
    elif args.audio:
        query = Query.of_audio(Path(args.audio).read_bytes())
    else:
        query = Query.of_text(args.query or args.text)
    hits = search_once(_settings(args), query, args.space, args.k, parse_where(args.where), args.modality)
    if args.json:
        print(json.dumps([{"id": h.id, "score": h.score, "payload": h.payload} for h in hits], ensure_ascii=False))
        return 0
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, start=1):
        payload = hit.payload
        text = payload.get("text") or payload.get("uri") or ""
        print(f"{rank:>2}. {hit.score:.3f}  [{payload.get('modality', '?')}] {payload.get('id')}  {text}")
    return 0


def cmd_models(args: argparse.Namespace, extra: list[str]) -> int:
    from embedstream.workers.models_cmd import run_models

    return run_models(args, _settings(args).model.cache_dir)


def cmd_serve(args: argparse.Namespace, extra: list[str]) -> int:
    from embedstream.workers.serve import serve

    settings = _settings(args)
    scheme = "https" if settings.api.tls_certfile else "http"
    where = f"{scheme}://{args.host}:{args.port}/"
    if args.insecure and not settings.api.keys:
        print(f"warning: serving on {args.host} without API keys (--insecure)", file=sys.stderr)
    print(f"serving {where} (API docs at {where}docs){' and ingesting in stream mode' if args.ingest else ''}")
    serve(settings, args.host, args.port, ingest=args.ingest, stop_timeout_s=args.stop_timeout, insecure=args.insecure)
    return 0


def cmd_api_key(args: argparse.Namespace, extra: list[str]) -> int:
    from embedstream.workers.api.auth import key_hash, new_key

    key = new_key()
    entry = {"name": args.name, "sha256": key_hash(key), "scope": args.scope}
    print(f"key (give it to {args.name}; it is not stored anywhere): {key}")
    print("add to embedstream.toml:")
    print(f'[[api.keys]]\nname = "{args.name}"\nsha256 = "{entry["sha256"]}"\nscope = "{args.scope}"')
    print(f"or to EMBEDSTREAM_API__KEYS (a JSON list): {json.dumps([entry])}")
    return 0


def cmd_cluster(args: argparse.Namespace, extra: list[str]) -> int:
    from embedstream.workers.cluster import cluster_space
    from embedstream.workers.search import parse_where

    k = args.k if args.k == "auto" else int(args.k)
    report = cluster_space(
        _settings(args),
        args.space,
        k,
        args.method,
        parse_where(args.where),
        k_max=args.k_max,
        plot=Path(args.plot) if args.plot else None,
        progress=not args.quiet,
    )
    silhouette = f", silhouette {report.silhouette:.3f}" if report.silhouette is not None else ""
    print(f"{report.points} points of {report.space} in {report.k} clusters ({report.method}{silhouette})")
    for cluster in report.clusters:
        name = "noise" if cluster.label < 0 else f"cluster {cluster.label}"
        print(f"  {name}: {cluster.size} points; nearest the centre:")
        for text in cluster.nearest:
            print(f"      · {text[:110]}")
    print(f"labels written to payload key cluster_{report.space}; picture: {report.plot}")
    return 0


def cmd_dlq(args: argparse.Namespace, extra: list[str]) -> int:
    from embedstream.workers import dlq

    settings = _settings(args)
    if args.action == "stats":
        counts = dlq.stats(settings)
        print(f"{sum(counts.values())} distinct dead letters on {settings.kafka.dead_letter_topic}")
        for reason, count in counts.most_common():
            print(f"  {reason:<22} {count}")
        return 0
    report = dlq.replay(settings, args.reason, args.to_topic)
    target = args.to_topic or settings.kafka.topic
    print(
        f"replayed {report.replayed} dead letters to {target} ({sum(report.by_reason.values())} distinct on the "
        f"topic, {report.already_replayed} replayed before, {report.unavailable} no longer retained at their source)"
    )
    return 0


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from embedstream.workers.demo import run_demo

    run_demo(beam_args=tuple(extra))
    return 0


def _common_options(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """--config, -v, --log-format; ``suppress``: no defaults (on a command, so as not to undo the top level's)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    config_help = "TOML settings file (default: embedstream.toml or $EMBEDSTREAM_CONFIG)"
    parser.add_argument("--config", default=default(None), help=config_help)
    parser.add_argument("-v", "--verbose", action="store_true", default=default(False), help="debug logging")
    parser.add_argument(
        "--log-format", choices=["text", "json"], default=default("text"), help="json: one object a line"
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="embedstream", description="Kafka → Beam → ONNX Runtime → Qdrant")
    _common_options(top)
    # The same options after the command too (`embedstream ingest --log-format json`, as manifests write it).
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, suppress=True)
    commands = top.add_subparsers(dest="command", required=True)

    class Commands:
        """``add_parser`` with the common options on every command."""

        @staticmethod
        def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
            return commands.add_parser(name, parents=[common], **kwargs)

    sub = Commands()

    broker = sub.add_parser(
        "broker", help="start/stop/status of a local tansu broker; run: in the foreground (a container's broker)"
    )
    broker.add_argument("action", choices=["start", "stop", "status", "run"])
    broker.add_argument("--port", type=int, default=9092)
    broker.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    broker.add_argument(
        "--advertise", metavar="HOST:PORT", help="run: the address clients are told to connect to (default HOST:PORT)"
    )
    broker.set_defaults(func=cmd_broker)

    produce = sub.add_parser("produce", help="send JSONL or plain-text files as events")
    produce.add_argument("paths", nargs="+", help="JSONL / text files, pictures, sounds, videos, or folders of them")
    produce.add_argument("--fps", type=float, default=1.0, help="video: frames per second to sample")
    produce.add_argument("--scene-threshold", type=float, help="video: also keep scene cuts (mean |Δ| of 0-255)")
    produce.add_argument("--segment-seconds", type=float, default=2.0, help="video: audio segment length")
    produce.add_argument("--topic", help="events topic (default: settings kafka.topic)")
    produce.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    produce.set_defaults(func=cmd_produce)

    ingest = sub.add_parser("ingest", help="run the Beam ingest pipeline; unknown options go to Beam")
    ingest.add_argument("--mode", choices=["drain", "stream"], default="drain")
    ingest.add_argument(
        "--shard", metavar="I/N", help="read only partitions p with p mod N == I (default: pipeline.shard, 0/1)"
    )
    ingest.add_argument(
        "--skip",
        metavar="TOPIC:PARTITION:OFFSET",
        action="append",
        default=[],
        help="dead-letter this record unread (the way past a record that stops a run); repeatable",
    )
    ingest.add_argument(
        "--metrics-port", type=int, help="serve Prometheus /metrics, /healthz and /readyz on this port (off by default)"
    )
    ingest.add_argument("--metrics-host", help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 in containers)")
    ingest.set_defaults(func=cmd_ingest)

    search = sub.add_parser("search", help="text query → nearest points")
    search.add_argument("query", nargs="?", help="a text query (or use --text / --image / --audio)")
    search.add_argument("--text", help="a text query")
    search.add_argument("--image", metavar="FILE", help="a picture as the query")
    search.add_argument("--audio", metavar="FILE", help="a sound as the query")
    search.add_argument("--space", help="the named vector to search (default: the query's own space)")
    search.add_argument("--modality", help="only points of this modality (text, image, audio, video, video_frame…)")
    search.add_argument("-k", type=int, default=5)
    search.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="payload filter")
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)

    serve = sub.add_parser("serve", help="the search API and web page (optionally ingesting in the same process)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--ingest",
        action="store_true",
        help="also run the pipeline in stream mode here (needed with the embedded store)",
    )
    serve.add_argument(
        "--stop-timeout",
        type=float,
        default=60.0,
        help="seconds the pipeline gets to finish its bundle after a stop (keep below the orchestrator's grace)",
    )
    serve.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without API keys (anyone can read)"
    )
    serve.set_defaults(func=cmd_serve)

    api_key = sub.add_parser("api-key", help="make an API key for serve: the key once, and its hash for the settings")
    api_key.add_argument("action", choices=["new"])
    api_key.add_argument("--name", required=True, help="who will hold it")
    api_key.add_argument("--scope", choices=["read", "admin"], default="read")
    api_key.set_defaults(func=cmd_api_key)

    cluster = sub.add_parser("cluster", help="group a space's vectors, write labels to the payload, draw them")
    cluster.add_argument("--space", required=True, help="the named vector to cluster (see GET /spaces)")
    cluster.add_argument("--k", default="auto", help="number of clusters, or auto (best silhouette)")
    cluster.add_argument("--k-max", type=int, default=12, help="largest k tried by --k auto")
    cluster.add_argument("--method", choices=["kmeans", "hdbscan"], default="kmeans")
    cluster.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="only these points")
    cluster.add_argument("--plot", help="where to write the PNG (default .embedstream/clusters-SPACE.png)")
    cluster.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    cluster.set_defaults(func=cmd_cluster)

    models = sub.add_parser("models", help="list, build or inspect encoders")
    models.add_argument("action", choices=["list", "build", "info", "verify", "export", "import-vectors"])
    models.add_argument("name", nargs="?", default="minilm")
    models.add_argument("--force", action="store_true", help="rebuild even if a verified build exists")
    models.add_argument("--quantize", action="store_true", help="also build the int8 variant NAME@<version>-int8")
    models.add_argument("--per-tensor", action="store_true", help="with --quantize: per-tensor, not per-channel")
    models.add_argument("--source", help="export: a Hugging Face model folder (or an id in the local HF cache)")
    models.add_argument(
        "--pooling", choices=["mean", "cls", "last_token"], default="mean", help="export: pooling (text, vision)"
    )
    models.add_argument("--no-normalize", action="store_true", help="export: keep vectors unnormalized")
    models.add_argument("--file", help="import-vectors: a word2vec (text or .bin) or GloVe file")
    models.add_argument("--binary", action="store_true", help="import-vectors: the file is word2vec binary")
    models.set_defaults(func=cmd_models)

    dlq = sub.add_parser("dlq", help="dead letters: counts by reason, or replay them to the events topic")
    dlq.add_argument("action", choices=["stats", "replay"])
    dlq.add_argument("--reason", action="append", default=[], help="replay only this reason code (repeatable)")
    dlq.add_argument("--to-topic", help="replay target (default: the events topic)")
    dlq.set_defaults(func=cmd_dlq)

    demo = sub.add_parser("demo", help="the whole product end to end on the embedded defaults")
    demo.set_defaults(func=cmd_demo)
    return top


def _not_beam_import_noise(record: logging.LogRecord) -> bool:
    # Beam warns at import time about optional Google Cloud clients that embedstream never uses.
    return not str(record.msg).startswith("apitools not found")


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line (``--log-format json``): what log collectors parse without patterns."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(verbose: bool, log_format: str = "text") -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_beam_import_noise)
        if log_format == "json":
            formatter = JsonLogFormatter()
            formatter.converter = time.gmtime
            handler.setFormatter(formatter)
    logging.getLogger("embedstream").setLevel(logging.DEBUG if verbose else logging.INFO)
    # kafka-python logs every connection at ERROR on a refused bootstrap; our one-line error says it better.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    configure_logging(args.verbose, args.log_format)
    if extra and args.command not in ("ingest", "demo"):
        print(f"embedstream: error: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, extra))
    except EmbedstreamError as exc:  # the project's own errors only: anything else is a bug, with a traceback
        print(f"embedstream: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
