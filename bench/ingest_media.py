"""Pictures and sounds: the full drain pipeline versus bare ONNX Runtime on the same decoded tensors, side by side.

    python -m bench.ingest_media [--images 300] [--clips 240] [--rounds 2]

Inputs are the shipped samples: the six photos re-encoded as 1024-px JPEGs (web-sized pictures; decoding grows
with pixels) and the twelve voice clips (FLAC, ~3 s each), cycled under distinct ids. Per kind and round, each
variant in its own subprocess, alternating the order between rounds:

* ``bare``: every input decoded and preprocessed *before* the clock starts; then only ONNX Runtime, in the
  pipeline's batches and the pipeline's way (pictures: 8 at a time through the ``effnet`` backbone once, its
  features through the ``effnet-conse`` head; sounds: 8 clips' partials per run through ``voice``) — the
  encoder's ceiling; for pictures also ``two models`` (both whole graphs: what the head saves);
* ``decode``: decoding + preprocessing alone, one thread, without and with the payload previews the pipeline
  makes (thumbnail, sound preview);
* ``pipeline``: events produced to a tansu topic, then ``run_ingest`` in drain mode (modalities restricted to
  the kind) into a fresh store; the encoder's and the decoders' busy time inside it are recorded, and when the
  first encode began (start-up). Run twice: ONNX Runtime's threads spinning (its default) and sleeping
  (``model.intra_op_spinning = false``), since spinning threads take the cores the decoders need.

The ceiling when decoding shares the cores with the encoder is 1 / (encode + decode-with-previews) seconds per
item: the report gives it from its parts and the pipeline's fraction of it, over the whole run and from the
first encode on.

Writes ``bench/reports/ingest_media.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import pyplot, run_phase, save_figure, write_json
from embedstream.schemas.defaults import MEDIA_BATCH_SIZE
from embedstream.schemas.settings import Settings

REPORTS = Path(__file__).parent / "reports"


def phase(*args: str) -> dict[str, Any]:
    """One phase of this benchmark in its own subprocess."""
    return run_phase("bench.ingest_media", *args)


BATCH = MEDIA_BATCH_SIZE  # what the pipeline batches by default


def inputs(kind: str, n: int) -> list[bytes]:
    from PIL import Image

    from embedstream.workers.sample_media import sample_photos, sample_voices

    if kind == "audio":
        clips = [p.read_bytes() for p in sample_voices().values()]
        return [clips[i % len(clips)] for i in range(n)]
    photos = []
    for path in sample_photos().values():
        image = Image.open(path).convert("RGB")
        scale = 1024 / max(image.size)
        buffer = io.BytesIO()
        image.resize((round(image.width * scale), round(image.height * scale))).save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    return [photos[i % len(photos)] for i in range(n)]


def decoder(kind: str, settings: Settings, previews: bool = False) -> Any:
    """Bytes → the encoder's input, as the pipeline's decoders make it (``previews``: with the payload preview)."""
    from embedstream.onnx_models.audio_encoder import AudioEncoder
    from embedstream.onnx_models.image_encoder import ImageEncoder, preprocess
    from embedstream.pipelines.media.audio import decode_audio
    from embedstream.pipelines.media.images import decode_image
    from embedstream.pipelines.media.previews import sound_preview, thumbnail

    media = settings.media
    if kind == "audio":
        rate = AudioEncoder.load(settings.model.cache_dir, settings.model.audio_model).sample_rate

        def sound(data: bytes) -> Any:
            wave = decode_audio(data, rate, media.max_audio_seconds, media.silence_dbfs)
            if previews:
                sound_preview(wave, rate)
            return wave

        return sound
    spec = ImageEncoder.load(settings.model.cache_dir, settings.model.image_model).spec

    def picture(data: bytes) -> Any:
        image = decode_image(data, media.max_image_pixels, spec.resize_short)
        if previews:
            thumbnail(image)
        return preprocess(image, spec)

    return picture


def phase_bare(kind: str, n: int, way: str = "best") -> dict[str, Any]:
    """ONNX Runtime alone on pre-decoded inputs. Pictures, ``best``: the backbone once + the ConSE head on its
    features (what the pipeline does); ``two-models``: both whole graphs (what one would do without the head)."""
    from embedstream.onnx_models.encoders import load_encoder
    from embedstream.onnx_models.image_encoder import FeatureHead
    from embedstream.onnx_models.manifest import ImageManifest
    from embedstream.onnx_models.registry import load_manifest_of

    settings = Settings.load()
    decode = decoder(kind, settings)
    decoded = [decode(data) for data in inputs(kind, n)]
    model = settings.model
    if kind == "audio":
        voice: Any = load_encoder(model.cache_dir, model.audio_model, model)
        steps = [voice.embed]
    elif way == "best":
        backbone: Any = load_encoder(model.cache_dir, model.image_model, model)
        head = FeatureHead(*load_manifest_of(ImageManifest, model.cache_dir, model.image_text_model), model)

        def both(batch: list[Any]) -> None:
            raw = backbone.run(batch)
            backbone.finish(raw)
            head.embed_features(raw)

        steps = [both]
    else:
        steps = [
            load_encoder(model.cache_dir, name, model).embed_batch
            for name in (model.image_model, model.image_text_model)
            if name
        ]
    started = time.perf_counter()
    for i in range(0, n, BATCH):
        for step in steps:
            step(decoded[i : i + BATCH])
    return {"items_per_s": n / (time.perf_counter() - started)}


def phase_decode(kind: str, n: int) -> dict[str, Any]:
    """One thread decoding (and preprocessing) every input; then again making the previews too, as the
    pipeline's decoders do."""
    settings = Settings.load()
    data = inputs(kind, n)
    rates = {}
    for key, previews in (("items_per_s", False), ("with_previews_per_s", True)):
        decode = decoder(kind, settings, previews)
        started = time.perf_counter()
        for item in data:
            decode(item)
        rates[key] = n / (time.perf_counter() - started)
    return rates


def phase_pipeline(kind: str, n: int, bootstrap: str, topic: str, store: str, spinning: str = "on") -> dict[str, Any]:
    from embedstream.onnx_models.audio_encoder import AudioEncoder
    from embedstream.onnx_models.image_encoder import FeatureHead, ImageEncoder
    from embedstream.pipelines.ingest import run_ingest
    from embedstream.pipelines.transforms.adapters import AudioAdapter, ImageAdapter

    busy = {"encode": 0.0, "decode": 0.0}
    first: list[float] = []  # when the first encode began
    lock = threading.Lock()

    def timed(cls: Any, method: str, bucket: str) -> None:
        original = getattr(cls, method)

        def wrapper(self: Any, *args: Any) -> Any:
            began = time.perf_counter()
            if bucket == "encode" and not first:
                first.append(began)
            try:
                return original(self, *args)
            finally:
                with lock:
                    busy[bucket] += time.perf_counter() - began

        setattr(cls, method, wrapper)

    if kind == "audio":
        timed(AudioEncoder, "embed_batch", "encode")
    else:
        timed(ImageEncoder, "run", "encode")
        timed(FeatureHead, "embed_features", "encode")
    timed(AudioAdapter if kind == "audio" else ImageAdapter, "decode", "decode")
    settings = Settings.load(
        kafka={"bootstrap_servers": bootstrap, "topic": topic, "dead_letter_topic": f"{topic}.dlq", "group_id": topic},
        qdrant={"backend": "edge", "path": store},
        pipeline={"progress_interval_s": 30.0},
        media={"modalities": ["text", kind]},
        model={"intra_op_spinning": spinning == "on"},
    )
    started = time.perf_counter()
    result = run_ingest(settings)
    elapsed = time.perf_counter() - started
    if result.points_upserted != n or result.dead_letters:
        raise RuntimeError(f"pipeline stored {result.points_upserted} of {n} ({result.dead_letters} dead letters)")
    startup = first[0] - started
    return {
        "items_per_s": n / elapsed,
        "steady_per_s": n / (elapsed - startup),
        "startup_s": startup,
        "seconds": elapsed,
        "encode_s": busy["encode"],
        "decode_s": busy["decode"],
    }


def produce(kind: str, n: int, bootstrap: str, topic: str) -> None:
    from embedstream.pipelines.io.kafka_clients import ensure_topics
    from embedstream.schemas.envelope import Envelope
    from embedstream.workers.produce import produce_events

    settings = Settings.load(kafka={"bootstrap_servers": bootstrap, "topic": topic})
    ensure_topics(settings.kafka, [topic])
    events = (
        Envelope.model_validate({"schema": 1, "id": f"{kind}-{i}", "modality": kind, "data": data})
        for i, data in enumerate(inputs(kind, n))
    )
    produce_events(settings, events, total=n, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, kind, n, *rest = args.phase
        phases: dict[str, Callable[..., dict[str, Any]]] = {
            "bare": phase_bare,
            "decode": phase_decode,
            "pipeline": phase_pipeline,
        }
        print(json.dumps(phases[name](kind, int(n), *rest)))
        return

    from embedstream.workers.broker import start_broker

    results: dict[str, list[dict[str, Any]]] = {"image": [], "audio": []}
    broker = start_broker()
    try:
        with tempfile.TemporaryDirectory(prefix="embedstream-bench-media-") as tmp:
            for r in range(args.rounds):
                for kind, n in (("image", args.images), ("audio", args.clips)):
                    pipes = {}
                    for spinning in ("on", "off") if r % 2 == 0 else ("off", "on"):  # alternate who goes first
                        topic = f"bench-{kind}-{r}-{spinning}-{int(time.time())}"
                        produce(kind, n, broker.bootstrap, topic)
                        pipes[spinning] = phase(
                            "pipeline", kind, str(n), broker.bootstrap, topic, f"{tmp}/{topic}", spinning
                        )
                    bare = phase("bare", kind, str(n))
                    decode = phase("decode", kind, str(n))
                    two = phase("bare", kind, str(n), "two-models") if kind == "image" else None
                    row = measured_row(bare, decode, pipes, two)
                    print(
                        f"round {r + 1} {kind}: bare {bare['items_per_s']:.1f}/s, ceiling {row['ceiling']:.1f}/s, "
                        f"pipeline spinning {pipes['on']['items_per_s']:.1f}/s, sleeping "
                        f"{pipes['off']['items_per_s']:.1f}/s",
                        flush=True,
                    )
                    results[kind].append(row)
    finally:
        broker.stop()
    write_report(results, {"image": args.images, "audio": args.clips})


def measured_row(
    bare: dict[str, Any], decode: dict[str, Any], pipes: dict[str, dict[str, Any]], two: dict[str, Any] | None
) -> dict[str, Any]:
    """One round of one kind, with the shared-core ceiling from its parts and each pipeline's fraction of it."""
    ceiling = 1.0 / (1.0 / bare["items_per_s"] + 1.0 / decode["with_previews_per_s"])
    fractions = {
        spinning: {"whole": p["items_per_s"] / ceiling, "steady": p["steady_per_s"] / ceiling}
        for spinning, p in pipes.items()
    }
    return {
        "bare": bare,
        "decode": decode,
        "pipelines": pipes,
        "two_models": two,
        "ceiling": ceiling,
        "fractions": fractions,
    }


def write_report(results: dict[str, list[dict[str, Any]]], counts: dict[str, int]) -> None:
    REPORTS.mkdir(exist_ok=True)
    write_json(REPORTS / "ingest_media.json", {"counts": counts, "rounds": results}, 2)
    lines = [
        "# Pictures and sounds: the pipeline against the ceiling of shared cores",
        "",
        "`python -m bench.ingest_media` — same inputs, same models, same batches; each variant its own process;",
        "rounds alternate which runs first. Ratios are the figure to quote (absolute rates on a shared 2-core",
        "machine are noise).",
        "",
        "The encoder (ONNX Runtime, both cores) and the decoders (two threads: decode, preview, preprocess) share",
        "the same cores, so the ceiling is not the bare encoder's rate but **1 / (encode + decode) seconds an",
        "item**: *bare ORT* is the encoder alone on pre-decoded inputs, *decode + previews* one thread doing the",
        "decoders' whole work. *whole*: the pipeline's rate over the run (start-up included); *steady*: from its",
        "first encode on. *spinning* / *sleeping*: ONNX Runtime's threads spinning between runs (its default) or",
        "sleeping (`model.intra_op_spinning = false`; what the ingest does for picture and sound models unless the",
        "setting says otherwise). *steady* above 1: ONNX Runtime leaves part of the two cores idle, and the",
        "decoders fill it, so the sum of the parts is a conservative ceiling.",
        "",
        "| kind | items | round | bare ORT /s | decode /s | decode + previews /s | ceiling /s "
        "| pipeline /s spinning · sleeping | ÷ ceiling, whole: spinning · sleeping | steady | start-up s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, rounds in results.items():
        for r, row in enumerate(rounds, start=1):
            on, off = row["pipelines"]["on"], row["pipelines"]["off"]
            f_on, f_off = row["fractions"]["on"], row["fractions"]["off"]
            lines.append(
                f"| {kind} | {counts[kind]} | {r} | {row['bare']['items_per_s']:.1f} | "
                f"{row['decode']['items_per_s']:.1f} | {row['decode']['with_previews_per_s']:.1f} | "
                f"{row['ceiling']:.1f} | {on['items_per_s']:.1f} · {off['items_per_s']:.1f} | "
                f"{f_on['whole']:.2f} · {f_off['whole']:.2f} | {f_on['steady']:.2f} · {f_off['steady']:.2f} | "
                f"{on['startup_s']:.1f} |"
            )
    lines.append("")
    for kind, rounds in results.items():
        medians = {
            (spinning, span): statistics.median(row["fractions"][spinning][span] for row in rounds)
            for spinning in ("on", "off")
            for span in ("whole", "steady")
        }
        lines.append(
            f"* **{kind}**: median fraction of the ceiling, whole run: spinning **{medians['on', 'whole']:.2f}**, "
            f"sleeping **{medians['off', 'whole']:.2f}**; from the first encode: spinning "
            f"**{medians['on', 'steady']:.2f}**, sleeping **{medians['off', 'steady']:.2f}**"
        )
    two = [row["two_models"]["items_per_s"] / row["bare"]["items_per_s"] for row in results.get("image", [])]
    if two:
        lines.append(
            f"* pictures, both whole graphs instead of backbone + head: **{statistics.median(two):.2f}×** the bare "
            "rate (the head halves the encoder's work)"
        )
    (REPORTS / "ingest_media.md").write_text("\n".join(lines) + "\n")
    plot(results, REPORTS / "ingest_media.png")
    print("\n".join(lines))


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    plt = pyplot()

    kinds = list(results)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 3.8))
    for axis, kind in zip(axes, kinds, strict=True):
        rounds = results[kind]
        values = {
            "bare ORT": statistics.median(r["bare"]["items_per_s"] for r in rounds),
            "ceiling\n(shared cores)": statistics.median(r["ceiling"] for r in rounds),
            "pipeline\nspinning": statistics.median(r["pipelines"]["on"]["items_per_s"] for r in rounds),
            "pipeline\nsleeping": statistics.median(r["pipelines"]["off"]["items_per_s"] for r in rounds),
        }
        axis.bar(list(values), list(values.values()), color=["#4c72b0", "#8c8c8c", "#dd8452", "#55a868"])
        axis.set_title(f"{kind}: items/s (median of {len(rounds)} rounds)")
        for x, value in enumerate(values.values()):
            axis.text(x, value, f"{value:.0f}", ha="center", va="bottom")
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
