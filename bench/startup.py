"""Start-up to the first encode, and whole-process text ingest against bare ONNX Runtime, each a fresh process.

    python -m bench.startup [--runs 5] [--events 4000] [--baseline REV]

1. **Start-up**: ``embedstream ingest --mode drain`` on a topic holding one text event, in a fresh process;
   seconds from launching it to its first encode (the launched process stamps the clock when its text encoder
   first runs; the launch time is passed in) and to its exit. Twice: with the default settings (every modality
   whose models are built: four models load) and with ``media.modalities=[text]``. Median of ``--runs``.
   ``--baseline REV`` also runs that git revision's code with the default settings, alternating with this one.
2. **Whole process on natural-length texts**: ``--events`` first paragraphs of standard-library docstrings
   (``bench.int8.docstrings``, cycled: 20-80 tokens, not the sample corpus's short sentences) produced to a
   topic; ``embedstream ingest --mode drain`` from launch to exit, against bare ONNX Runtime in the same run:
   its encode alone (tokenize, sort by length, batches of 32: its best configuration) and as a whole process
   (launch, imports, model load, encode, exit).
3. **The parts** of a start-up, each its own fresh process: the interpreter; importing ``apache_beam``; the
   CLI's imports.

Writes ``bench/reports/startup.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import checkout, pyplot, save_figure, write_json

REPORTS = Path(__file__).parent / "reports"

# Runs the CLI as `embedstream` would, with the text encoder's first batch stamped (seconds since launch).
INGEST = """
import runpy, sys, time
launched = float(sys.argv.pop(1))
from embedstream.onnx_models.text_encoder import TextEncoder
original = TextEncoder.embed_batch
def stamped(self, batch):
    if not getattr(TextEncoder, "_stamped", False):
        TextEncoder._stamped = True
        print(f"FIRST_ENCODE {time.time() - launched:.4f}", file=sys.stderr, flush=True)
    return original(self, batch)
TextEncoder.embed_batch = stamped
sys.argv = ["embedstream", *sys.argv[1:]]
runpy.run_module("embedstream.workers.cli", run_name="__main__")
"""

# Bare ONNX Runtime as a whole process: imports, model load, tokenize, sort, batches of 32, exit.
BARE = """
import json, sys, time
launched = float(sys.argv[1])
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.schemas.settings import ModelSettings
texts = json.load(open(sys.argv[2]))
encoder = TextEncoder.from_settings(ModelSettings())
began = time.perf_counter()
tokens = sorted(encoder.tokenize(texts), key=len)
for start in range(0, len(tokens), 32):
    encoder.embed_batch(tokens[start : start + 32])
encode = time.perf_counter() - began
print(json.dumps({"encode_s": encode, "to_loaded_s": time.time() - launched - encode}))
"""


def launch(code: str, *args: str, env: dict[str, str] | None = None) -> tuple[float, str, str]:
    """Run ``python -c code launched-at args…``: (seconds from launch to exit, stdout, stderr)."""
    launched = time.time()
    out = subprocess.run(
        [sys.executable, "-c", code, f"{launched:.6f}", *args], capture_output=True, text=True, env=env
    )
    wall = time.time() - launched
    if out.returncode != 0:
        raise RuntimeError(f"the launched process failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return wall, out.stdout, out.stderr


def ingest(
    bootstrap: str, topic: str, store: str, text_only: bool, code: dict[str, str] | None = None
) -> dict[str, float]:
    """``embedstream ingest --mode drain`` in a fresh process; ``code``: the environment of another revision's."""
    env = dict(
        os.environ,
        **(code or {}),
        EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        EMBEDSTREAM_KAFKA__TOPIC=topic,
        EMBEDSTREAM_KAFKA__DEAD_LETTER_TOPIC=f"{topic}.dlq",
        EMBEDSTREAM_KAFKA__GROUP_ID=f"g-{topic}-{time.time_ns()}",
        EMBEDSTREAM_QDRANT__BACKEND="edge",
        EMBEDSTREAM_QDRANT__PATH=store,
    )
    if text_only:
        env["EMBEDSTREAM_MEDIA__MODALITIES"] = '["text"]'
    wall, stdout, stderr = launch(INGEST, "ingest", "--mode", "drain", env=env)
    first = [float(line.split()[1]) for line in stderr.splitlines() if line.startswith("FIRST_ENCODE")]
    if not first:
        raise RuntimeError(f"the ingest never encoded: {stdout[-500:]} {stderr[-2000:]}")
    return {"first_encode_s": first[0], "exit_s": wall, "stored": float(stdout.split()[0])}


def parts(runs: int) -> dict[str, float]:
    """Median seconds of a fresh process doing only one thing."""
    steps = {
        "interpreter": "pass",
        "import apache_beam": "import apache_beam",
        "import onnxruntime, tokenizers": "import onnxruntime, tokenizers",
        "the CLI's imports": "import embedstream.workers.cli",
    }
    found = {}
    for name, code in steps.items():
        walls = [launch(f"import sys; sys.argv.pop(1); {code}")[0] for _ in range(runs)]
        found[name] = statistics.median(walls)
    return found


def produce(bootstrap: str, topic: str, texts: list[str]) -> None:
    from embedstream.pipelines.io.kafka_clients import ensure_topics
    from embedstream.schemas.envelope import Envelope
    from embedstream.schemas.settings import Settings
    from embedstream.workers.produce import produce_events

    settings = Settings.load(kafka={"bootstrap_servers": bootstrap, "topic": topic})
    ensure_topics(settings.kafka, [topic])
    events = (
        Envelope.model_validate({"schema": 1, "id": f"startup-{i}", "modality": "text", "text": text})
        for i, text in enumerate(texts)
    )
    produce_events(settings, events, total=len(texts), progress=False)


def alternating_drains(
    texts: list[str],
    variants: dict[str, Callable[[str], dict[str, str] | None]],
    rounds: int,
    folder: str,
    after: Callable[[str, str, str], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds from launch to exit of ``embedstream ingest --mode drain`` over ``texts``, per variant: each drain
    reads a fresh topic on a local tansu into a fresh store in a fresh process, the variants alternating, ``rounds``
    times. ``variants``: label → the extra environment of a drain given its topic (another revision's code, a
    setting); ``after(label, bootstrap, topic)``: called once each drain is done, the broker still up."""
    from tqdm import tqdm

    from embedstream.workers.broker import start_broker

    walls: dict[str, list[float]] = {label: [] for label in variants}
    broker = start_broker()
    try:
        with tqdm(total=rounds * len(variants), desc="drains", unit="drain") as bar:
            for run in range(rounds):
                for label, environment in variants.items():
                    topic = f"drain-{run}-{time.time_ns()}"
                    produce(broker.bootstrap, topic, texts)
                    done = ingest(broker.bootstrap, topic, f"{folder}/{topic}", True, environment(topic))
                    if done["stored"] < len(texts):
                        raise RuntimeError(f"{label} stored {done['stored']:.0f} of {len(texts)} events")
                    walls[label].append(done["exit_s"])
                    if after is not None:
                        after(label, broker.bootstrap, topic)
                    bar.update(1)
    finally:
        broker.stop()
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--baseline", help="a git revision whose start-up also runs, alternating with this one's")
    args = parser.parse_args()

    from tqdm import tqdm

    from bench.int8 import docstrings
    from embedstream.workers.broker import start_broker

    natural = docstrings(limit=100_000)
    texts = [natural[i % len(natural)] for i in range(args.events)]
    broker = start_broker()
    result: dict[str, Any] = {"runs": args.runs, "events": args.events, "distinct_texts": len(natural)}
    try:
        with tempfile.TemporaryDirectory(prefix="embedstream-startup-") as tmp:
            result["parts"] = parts(args.runs)
            variants: list[tuple[str, bool, dict[str, str] | None]] = [
                ("default settings", False, None),
                ("text only", True, None),
            ]
            if args.baseline:
                old = checkout(args.baseline, Path(tmp) / "baseline")
                variants.insert(0, (f"default settings @{args.baseline}", False, old))
            starts: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in variants}
            with tqdm(total=len(variants) * args.runs, desc="start-ups", unit="run") as bar:
                for run in range(args.runs):
                    for label, text_only, code in variants:
                        topic = f"startup-{run}-{len(starts[label])}-{time.time_ns()}"
                        produce(broker.bootstrap, topic, texts[:1])
                        starts[label].append(ingest(broker.bootstrap, topic, f"{tmp}/s-{topic}", text_only, code))
                        bar.update(1)
            result["startup"] = {
                label: {key: statistics.median(r[key] for r in rows) for key in ("first_encode_s", "exit_s")}
                | {"first_encode_all_s": [r["first_encode_s"] for r in rows]}
                for label, rows in starts.items()
            }
            corpus = Path(tmp) / "texts.json"
            corpus.write_text(json.dumps(texts))
            whole = []
            for run in tqdm(range(2), desc="whole process", unit="round"):
                topic = f"natural-{run}-{time.time_ns()}"
                produce(broker.bootstrap, topic, texts)
                wall, stdout, _ = launch(BARE, str(corpus))
                bare = json.loads(stdout.strip().splitlines()[-1]) | {"exit_s": wall}
                pipe = ingest(broker.bootstrap, topic, f"{tmp}/n-{topic}", text_only=False)
                if pipe["stored"] < args.events:
                    raise RuntimeError(f"the pipeline stored {pipe['stored']:.0f} of {args.events} events")
                whole.append({"bare": bare, "pipeline": pipe})
            result["whole"] = whole
    finally:
        broker.stop()
    write_report(result)


def write_report(result: dict[str, Any]) -> None:
    import onnxruntime

    REPORTS.mkdir(exist_ok=True)
    write_json(REPORTS / "startup.json", result, 2)
    events = result["events"]
    lines = [
        "# Start-up and whole-process text ingest",
        "",
        f"`python -m bench.startup` — every figure a fresh process; onnxruntime {onnxruntime.__version__}, "
        f"{os.cpu_count()} CPUs, median of {result['runs']} runs.",
        "",
        "## Start-up: launch to the first encode, a one-event topic",
        "",
        "| settings | launch → first encode s | launch → exit s | every run (first encode) |",
        "|---|---|---|---|",
    ]
    for label, row in result["startup"].items():
        every = ", ".join(f"{s:.2f}" for s in row["first_encode_all_s"])
        lines.append(f"| {label} | {row['first_encode_s']:.2f} | {row['exit_s']:.2f} | {every} |")
    lines += ["", "The parts, each alone in a fresh process (launch → exit):", ""]
    lines += [f"- {name}: {seconds:.2f} s" for name, seconds in result["parts"].items()]
    lines += [
        "",
        f"## Whole process: {events:,} natural-length texts ({result['distinct_texts']} distinct docstring "
        "paragraphs, cycled)",
        "",
        "| round | bare encode ev/s | bare whole process ev/s | pipeline whole process ev/s | pipeline / bare "
        "encode | pipeline / bare whole process |",
        "|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(result["whole"], 1):
        bare, pipe = row["bare"], row["pipeline"]
        encode, bare_whole, pipe_whole = events / bare["encode_s"], events / bare["exit_s"], events / pipe["exit_s"]
        lines.append(
            f"| {i} | {encode:.1f} | {bare_whole:.1f} | {pipe_whole:.1f} | {pipe_whole / encode:.3f} | "
            f"{pipe_whole / bare_whole:.3f} |"
        )
    lines += [
        "",
        "*bare encode*: tokenize, sort by length and batches of 32, timed inside the process (no start-up);",
        "*whole process*: launch to exit. The pipeline reads the events from a tansu topic, embeds them with the",
        "default settings (every built model loads) and stores them in a fresh embedded store.",
    ]
    (REPORTS / "startup.md").write_text("\n".join(lines) + "\n")
    plot(result, REPORTS / "startup.png")
    print("\n".join(lines))


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = list(result["startup"])
    for i, label in enumerate(labels):
        runs = result["startup"][label]["first_encode_all_s"]
        left.scatter([i] * len(runs), runs, alpha=0.6)
    left.axhline(1.0, linestyle=":", color="grey", label="goal: 1 s")
    ticks = [label.replace(" @", "\n@") for label in labels]
    left.set(title="launch → first encode", xticks=range(len(labels)), xticklabels=ticks, ylabel="seconds")
    left.legend()
    names = list(result["parts"])
    right.barh(names, [result["parts"][n] for n in names])
    right.set(title="parts, each a fresh process", xlabel="seconds")
    save_figure(fig, path)


if __name__ == "__main__":
    main()
