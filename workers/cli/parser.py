"""The command line's grammar (argparse): every command, its options, and the common options that may come
before or after the command. Each command's parser names the typed function that runs it (``commands``)."""

from __future__ import annotations

import argparse
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from embedstream.schemas.settings import SKIP_FORM
from embedstream.workers.cli import commands as cmd


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


def readable_file(value: str) -> str:
    """An argument naming a file to read: refused at parse time (usage, exit 2) when it is not one."""
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"cannot read {value}: {'a folder' if path.is_dir() else 'no such file'}")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {value}: {exc.strerror}") from exc
    return value


def record_position(value: str) -> str:
    """TOPIC:PARTITION:OFFSET, as ``--skip`` and ``pipeline.skip`` take it."""
    if not SKIP_FORM.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not TOPIC:PARTITION:OFFSET (e.g. events:2:1041)")
    return value


def shard(value: str) -> str:
    """I/N with I below N, as ``pipeline.shard`` takes it."""
    found = re.fullmatch(r"(\d+)/([1-9]\d*)", value)
    if found is None or int(found.group(1)) >= int(found.group(2)):
        raise argparse.ArgumentTypeError(f"{value!r} is not I/N with I below N (e.g. 0/3)")
    return value


def _installed_version() -> str:
    try:
        return metadata.version("embedstream")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="embedstream", description="Kafka → Beam → ONNX Runtime → Qdrant")
    top.add_argument("--version", action="version", version=f"embedstream {_installed_version()}")
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
    broker.add_argument(
        "--storage",
        default="memory",
        metavar="memory|s3://BUCKET/",
        help="where topics and offsets live: memory (lost when it stops) or an S3 bucket (kept; AWS_* variables, "
        "AWS_ENDPOINT and AWS_ALLOW_HTTP=true for a server on loopback)",
    )
    broker.set_defaults(run=cmd.broker)

    produce = sub.add_parser("produce", help="send JSONL or plain-text files as events")
    produce.add_argument("paths", nargs="+", help="JSONL / text files, pictures, sounds, videos, or folders of them")
    produce.add_argument("--fps", type=float, default=1.0, help="video: frames per second to sample")
    produce.add_argument("--scene-threshold", type=float, help="video: also keep scene cuts (mean |Δ| of 0-255)")
    produce.add_argument("--segment-seconds", type=float, default=2.0, help="video: audio segment length")
    produce.add_argument("--topic", help="events topic (default: settings kafka.topic)")
    produce.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    produce.set_defaults(run=cmd.produce)

    delete = sub.add_parser(
        "delete", help="send deletions: a tombstone per id (everything it made), or a delete of one modality"
    )
    delete.add_argument("ids", nargs="+", help="event ids (a video's id deletes the whole video)")
    delete.add_argument(
        "--modality",
        choices=["text", "image", "audio", "video_frame", "video_audio", "video_end"],
        help="only this modality's point (a video modality: the whole video); default: a tombstone",
    )
    delete.add_argument("--topic", help="events topic (default: settings kafka.topic)")
    delete.set_defaults(run=cmd.delete)

    ingest = sub.add_parser("ingest", help="run the Beam ingest pipeline; unknown options go to Beam")
    ingest.add_argument("--mode", choices=["drain", "stream"], default="drain")
    ingest.add_argument(
        "--shard",
        type=shard,
        metavar="I/N",
        help="read only partitions p with p mod N == I (default: pipeline.shard, 0/1)",
    )
    ingest.add_argument(
        "--skip",
        type=record_position,
        metavar="TOPIC:PARTITION:OFFSET",
        action="append",
        default=[],
        help="dead-letter this record unread (the way past a record that stops a run); repeatable",
    )
    ingest.add_argument(
        "--metrics-port", type=int, help="serve Prometheus /metrics, /healthz and /readyz on this port (off by default)"
    )
    ingest.add_argument("--metrics-host", help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 in containers)")
    ingest.set_defaults(run=cmd.ingest)

    search = sub.add_parser("search", help="text query → nearest points")
    search.add_argument("query", nargs="?", help="a text query (or use --text / --image / --audio)")
    search.add_argument("--text", help="a text query")
    search.add_argument("--image", type=readable_file, metavar="FILE", help="a picture as the query")
    search.add_argument("--audio", type=readable_file, metavar="FILE", help="a sound as the query")
    search.add_argument("--space", help="the named vector to search (default: the query's own space)")
    search.add_argument("--modality", help="only points of this modality (text, image, audio, video, video_frame…)")
    search.add_argument("-k", type=int, default=5)
    search.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="payload filter")
    search.add_argument("--json", action="store_true", dest="as_json", help="hits as one JSON array")
    search.add_argument(
        "--mode",
        choices=["auto", "dense", "sparse", "hybrid"],
        default=None,
        help="text queries: dense (meaning), sparse (BM25 keywords: names, codes, rare words), hybrid (both, "
        "fused as api.hybrid_fusion says) or auto (hybrid where the collection has keyword vectors, else dense); "
        "default: api.search_mode (auto)",
    )
    search.add_argument(
        "--documents",
        action="store_true",
        help="text queries: hits grouped by document (a long text's chunks under it, a video's members under it), "
        "each with its best passages and their character offsets",
    )
    search.add_argument("--per-document", type=int, default=3, metavar="N", help="passages shown per document")
    search.add_argument(
        "--diversity",
        type=float,
        default=0.0,
        metavar="D",
        help="0..1, every mode: maximal marginal relevance (near-duplicates give way to other relevant hits)",
    )
    search.set_defaults(run=cmd.search)

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
    serve.set_defaults(run=cmd.serve)

    api_key = sub.add_parser("api-key", help="make an API key for serve: the key once, and its hash for the settings")
    api_key.add_argument("action", choices=["new"])
    api_key.add_argument("--name", required=True, help="who will hold it")
    api_key.add_argument("--scope", choices=["read", "admin"], default="read")
    api_key.set_defaults(run=cmd.api_key)

    cluster = sub.add_parser("cluster", help="group a space's vectors, write labels to the payload, draw them")
    cluster.add_argument("--space", required=True, help="the named vector to cluster (see GET /spaces)")
    cluster.add_argument("--k", default="auto", help="number of clusters, or auto (best silhouette)")
    cluster.add_argument("--k-max", type=int, default=12, help="largest k tried by --k auto")
    cluster.add_argument("--method", choices=["kmeans", "hdbscan"], default="kmeans")
    cluster.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="only these points")
    cluster.add_argument("--plot", help="where to write the PNG (default .embedstream/clusters-SPACE.png)")
    cluster.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    cluster.set_defaults(run=cmd.cluster)

    classify = sub.add_parser(
        "classify",
        help="label a space's points by label descriptions (zero-shot), labelled examples (kNN), or both",
        description="Writes class_<space> = {label, method, score} into each point's payload; examples keep theirs.",
    )
    classify.add_argument("--space", required=True, help="the space whose points to label (see `spaces list`)")
    classify.add_argument("--labels", metavar="FILE", help='a JSON object {"label": "what it means", ...}')
    classify.add_argument("--examples", metavar="FIELD", help="the payload field holding the examples' labels")
    classify.add_argument("-k", type=int, default=5, help="kNN: the nearest examples that vote; --spread: neighbours")
    classify.add_argument(
        "--spread", action="store_true", help="with --examples: spread their labels along the neighbourhood graph"
    )
    classify.add_argument("--margin", type=float, default=0.0, help="below this lead over the second: none")
    classify.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="only these points")
    classify.add_argument("--json", action="store_true", dest="as_json", help="counts and method as JSON")
    classify.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    classify.set_defaults(run=cmd.classify)

    models = sub.add_parser("models", help="list, build or inspect encoders")
    models.add_argument("action", choices=["list", "build", "info", "verify", "export", "import-vectors"])
    models.add_argument("name", nargs="?", default="minilm")
    models.add_argument("--force", action="store_true", help="rebuild even if a verified build exists")
    models.add_argument("--quantize", action="store_true", help="also build the int8 variant NAME@<version>-int8")
    models.add_argument("--per-tensor", action="store_true", help="with --quantize: per-tensor, not per-channel")
    models.add_argument(
        "--source",
        help="export: a Hugging Face model folder (or an id in the local HF cache), or an OpenCLIP checkpoint folder",
    )
    models.add_argument(
        "--pooling", choices=["mean", "cls", "last_token"], default="mean", help="export: pooling (text, vision)"
    )
    models.add_argument("--no-normalize", action="store_true", help="export: keep vectors unnormalized")
    models.add_argument(
        "--arch",
        choices=["vgg11", "vgg16", "resnet50"],
        help="export: --source is a torchvision checkpoint (.pth) of this architecture (torchvision not needed)",
    )
    models.add_argument(
        "--space",
        help="export: the space the model writes (default: NAME); name an existing space to take it over with "
        "`spaces migrate SPACE --to NAME`",
    )
    models.add_argument("--file", type=readable_file, help="import-vectors: a word2vec (text or .bin) or GloVe file")
    models.add_argument("--binary", action="store_true", help="import-vectors: the file is word2vec binary")
    models.set_defaults(run=cmd.models)

    spaces = sub.add_parser(
        "spaces",
        help="the collection's spaces, and moving one to another model with no downtime",
        description="list: each space's model, points and migration state. migrate SPACE --to MODEL: add the new "
        "model's vectors beside the old and fill them (resumable; ingests write both meanwhile). switch: searches "
        "use the new vectors. rollback: back to the old. drop-old: remove the old vectors. cancel: abandon a "
        "migration before its switch.",
    )
    spaces.add_argument("action", choices=["list", "migrate", "switch", "rollback", "drop-old", "cancel"])
    spaces.add_argument("space", nargs="?", help="the space (see `spaces list`); every action but list needs it")
    spaces.add_argument("--to", help="migrate: the new model, NAME or NAME@VERSION, built here")
    spaces.add_argument("--json", action="store_true", dest="as_json", help="list: as JSON")
    spaces.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    spaces.set_defaults(run=cmd.spaces)

    store = sub.add_parser(
        "store",
        help="snapshot the store into one file, or restore one into a new path",
        description="snapshot PATH: the store's files and what its vectors mean (spaces, models' sha256) in one tar "
        "file; restore PATH: unpack it as the store the settings name (never over an existing one), refused if its "
        "models are not built here with the same weights. While `serve` holds the embedded store, snapshot through "
        "its API (POST /store/snapshot).",
    )
    store.add_argument("action", choices=["snapshot", "restore"])
    store.add_argument("path", help="the snapshot file (.tar)")
    store.set_defaults(run=cmd.store)

    tail = sub.add_parser(
        "tail-embeddings",
        help="read the embeddings topic (pipeline.output_topic) back as JSON lines or Parquet: every record, or "
        "with --latest each point's newest state",
    )
    tail.add_argument("--topic", help="the topic to read (default: pipeline.output_topic)")
    tail.add_argument("--follow", action="store_true", help="after the topic's end, keep printing new records")
    tail.add_argument(
        "--latest", dest="newest_only", action="store_true", help="each point id's newest record, deletes applied"
    )
    tail.add_argument("--out", type=Path, help="a .jsonl or .parquet file (default: JSON lines on stdout)")
    tail.add_argument("-k", "--limit", type=int, help="at most this many records")
    tail.set_defaults(run=cmd.tail_embeddings)

    dlq = sub.add_parser("dlq", help="dead letters: counts by reason, or replay them to the events topic")
    dlq.add_argument("action", choices=["stats", "replay"])
    dlq.add_argument("--reason", action="append", default=[], help="replay only this reason code (repeatable)")
    dlq.add_argument("--to-topic", help="replay target (default: the events topic)")
    dlq.set_defaults(run=cmd.dlq)

    demo = sub.add_parser("demo", help="the whole product end to end on the embedded defaults")
    demo.set_defaults(run=cmd.demo)
    return top
