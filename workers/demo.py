"""``make demo``: the whole product on one machine, on the embedded defaults.

Starts a local tansu broker on a free port, produces the shipped sample corpus (plus a few broken events, to
show dead letters), the sample photos, voice clips and two short videos made from them, drains it all through
the Beam ingest pipeline into a fresh embedded Qdrant store, prints search results a person can judge — text,
text→image, image→image, voice→voice, text→video — and stops the broker.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from embedstream.onnx_models.corpus import corpus_path, documents_path
from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import ensure_topics, producer
from embedstream.schemas.settings import Settings
from embedstream.workers import dlq
from embedstream.workers.broker import start_broker
from embedstream.workers.grouping import describe_groups, snippet
from embedstream.workers.produce import produce_files
from embedstream.workers.sample_media import make_sample_video, sample_photos, sample_voices
from embedstream.workers.search import Query, Searcher

DEMO_QUERIES = (
    "how do I keep bread dough from sticking",
    "which planets can I see without a telescope",
    "saving money for retirement with index funds",
    "symptoms of dehydration after exercise",
    "fixing a memory leak in a long-running service",
    "best time of year to plant tomatoes",
)
# Answered inside the long articles (documents.jsonl): grouped by document, with the passages that answer them.
DOCUMENT_QUERIES = (
    "why is the full moon a bad time to look at craters",
    "what sets the shortest safe interval between two trains",
)

BROKEN_EVENTS = (
    b'{"schema": 1, "id": "broken-1", "modality": "text", "text": ',  # truncated JSON
    b'{"schema": 1, "id": "broken-2", "modality": "text", "text": "   "}',  # empty text
    b'{"schema": 1, "id": "broken-3", "modality": "smell", "text": "roses"}',  # unknown modality
)


def sample_corpus() -> Path:
    return corpus_path()


def run_demo(workdir: Path = Path(".embedstream/demo"), beam_args: tuple[str, ...] = ()) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    print("▶ starting a local Kafka-protocol broker (tansu)…")
    broker = start_broker(log_dir=workdir)
    try:
        settings = Settings.load(
            kafka={
                "bootstrap_servers": broker.bootstrap,
                "topic": "demo.events",
                "dead_letter_topic": "demo.dead-letters",
                "group_id": "embedstream-demo",
            },
            qdrant={"backend": "edge", "path": str(workdir / "qdrant")},
        )
        print(f"  broker at {broker.bootstrap}")
        print(
            f"▶ producing the sample corpus ({sample_corpus().name}), three long articles ({documents_path().name}) "
            f"and {len(BROKEN_EVENTS)} broken events…"
        )
        ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
        report = produce_files(settings, [sample_corpus(), documents_path()])
        media = demo_media(workdir)
        print(f"▶ producing {len(media)} media files: photos, voice clips and two videos (frames + audio segments)…")
        media_report = produce_files(settings, media)
        raw = producer(settings.kafka, settings.pipeline.max_event_bytes)
        for value in BROKEN_EVENTS:
            raw.send(settings.kafka.topic, value=value)
        raw.flush()
        raw.close()
        total = report.sent + media_report.sent + len(BROKEN_EVENTS)
        print(f"▶ ingesting {total} events (Beam, drain mode) into {workdir / 'qdrant'}…")
        started = time.monotonic()
        result = run_ingest(settings, beam_args)
        elapsed = time.monotonic() - started
        print(
            f"  {result.points_upserted} points stored ({result.video_views} video views updated), "
            f"{result.dead_letters} dead letters "
            f"in {elapsed:.1f}s ({(result.points_upserted + result.dead_letters) / elapsed:.0f} events/s)"
        )
        reasons = dlq.stats(settings)
        print("  dead letters by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())))
        searcher = Searcher(settings)
        try:
            for query in DEMO_QUERIES:
                print(f"\n🔎 {query}")
                for hit in searcher.search(Query.of_text(query), limit=3, modality="text"):
                    topic = hit.payload.get("metadata", {}).get("topic", "?")
                    print(f"   {hit.score:.3f}  [{topic}] {snippet(str(hit.payload.get('text', '')))}")
            for query in DOCUMENT_QUERIES:
                print(f"\n📄 {query}  (search --documents: long articles are stored as passages and sentences)")
                groups = searcher.search_documents(Query.of_text(query), limit=2, per_group=1)
                print("\n".join("   " + line for line in describe_groups(groups).splitlines()))
            show_media_searches(searcher, workdir)
        finally:
            searcher.close()
        show_clusters(settings, workdir)
        print(
            f"\nTry your own (with EMBEDSTREAM_QDRANT__PATH={workdir / 'qdrant'}): "
            "embedstream search 'your question' | --image FILE | --audio FILE, "
            "or embedstream serve and open http://127.0.0.1:8000/"
        )
    finally:
        broker.stop()


def demo_media(workdir: Path) -> list[Path]:
    """The sample photos, the first two sentences of each voice, and two videos made from them."""
    photos, voices = sample_photos(), sample_voices()
    videos = [
        make_sample_video(workdir / "cat.mp4", [photos["chelsea"]], [voices["us-m3-1"]], 3.0),
        make_sample_video(workdir / "launch.webm", [photos["rocket"], photos["astronaut"]], [voices["en-f2-1"]], 2.0),
    ]
    return [*photos.values(), *(p for name, p in voices.items() if not name.endswith("-3")), *videos]


def show_media_searches(searcher: Searcher, workdir: Path) -> None:
    from PIL import Image

    rocket = Image.open(sample_photos()["rocket"])
    crop = rocket.crop((rocket.width // 5, rocket.height // 6, rocket.width * 4 // 5, rocket.height * 5 // 6))
    crop_path = workdir / "rocket-crop.jpg"
    crop.save(crop_path, quality=90)
    voice = sample_voices()["scotland-m7-3"]
    searches = (
        ("text → image: 'a photo of a cat'", Query.of_text("a photo of a cat"), "image"),
        (f"image → image: a crop of rocket.jpg ({crop_path})", Query.of_image(crop_path.read_bytes()), "image"),
        (
            f"voice → voice: a new sentence by {voice.stem.rsplit('-', 1)[0]}",
            Query.of_audio(voice.read_bytes()),
            "audio",
        ),
        ("text → video: 'a rocket launch'", Query.of_text("a rocket launch"), "video"),
    )
    for title, query, modality in searches:
        print(f"\n🔎 {title}")
        for hit in searcher.search(query, limit=3, modality=modality):
            print(f"   {hit.score:.3f}  [{hit.payload.get('modality')}] {hit.payload.get('id')}")


def show_clusters(settings: Settings, workdir: Path) -> None:
    from embedstream.workers.cluster import cluster_space

    print("\n▶ clustering the texts (minilm space, k chosen by silhouette)…")
    report = cluster_space(
        settings, "minilm", "auto", where={"modality": "text"}, k_max=14, plot=workdir / "clusters.png", progress=False
    )
    print(f"  {report.k} clusters, silhouette {report.silhouette:.2f}; labels in payload key cluster_minilm")
    for cluster in report.clusters:
        print(f"   {cluster.label:>2} ({cluster.size:>3})  {cluster.nearest[0][:90]}")
    print(f"  picture: {report.plot}")
