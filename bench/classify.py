"""Five labelled examples a topic: the kNN vote against label spreading, over ten draws of the examples.

    python -m bench.classify

The sample corpus (520 sentences, ten topics) embedded by minilm; per draw, five examples a topic chosen at
random (seeded), every other sentence labelled by ``workers.classify.Classifier`` — the kNN vote (k = 5) and
spreading (``--spread``, k = 5) — and scored against its topic. One draw is what ``tests/test_classify.py``
checks through the store and the CLI; this shows the spread over draws. Writes
``bench/reports/classify.{md,json,png}``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import pyplot, save_figure, write_json
from embedstream.onnx_models.corpus import corpus_records
from embedstream.onnx_models.text_encoder import TextEncoder
from embedstream.schemas.settings import ModelSettings
from embedstream.workers.classify import Classifier

REPORTS = Path(__file__).parent / "reports"
DRAWS, PER_TOPIC, K = 10, 5, 5
METHODS = {"kNN vote": False, "spread": True}


def measure() -> dict[str, Any]:
    records = corpus_records()
    vectors = TextEncoder.load(ModelSettings().cache_dir, "minilm").embed([r["text"] for r in records])
    topics = np.asarray([r["metadata"]["topic"] for r in records])
    draws: list[dict[str, float]] = []
    for seed in range(DRAWS):
        rng = np.random.default_rng(seed)
        chosen = np.zeros(len(records), dtype=bool)
        for topic in sorted(set(topics)):
            chosen[rng.choice(np.flatnonzero(topics == topic), PER_TOPIC, replace=False)] = True
        examples = (vectors[chosen], [str(t) for t in topics[chosen]])
        row = {}
        for method, spread in METHODS.items():
            predicted = [p.label for p in Classifier(None, examples, K, spread=spread).predict(vectors[~chosen])]
            row[method] = float(np.mean(np.asarray(predicted) == topics[~chosen]))
        draws.append(row)
    return {"texts": len(records), "per_topic": PER_TOPIC, "k": K, "draws": draws}


def write_report(measured: dict[str, Any]) -> str:
    REPORTS.mkdir(exist_ok=True)
    write_json(REPORTS / "classify.json", measured, 1)
    draws = measured["draws"]
    lines = [
        f"# {measured['per_topic']} examples a topic: kNN vote vs label spreading",
        "",
        f"`python -m bench.classify` — minilm, the sample corpus ({measured['texts']} sentences, ten topics), "
        f"{len(draws)} seeded draws of the examples, k = {measured['k']}; accuracy on the sentences not drawn.",
        "",
        "| draw | " + " | ".join(METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    lines += [f"| {n} | " + " | ".join(f"{row[m]:.3f}" for m in METHODS) + " |" for n, row in enumerate(draws)]
    lines.append("")
    for method in METHODS:
        values = [row[method] for row in draws]
        lines.append(
            f"* **{method}**: mean {statistics.mean(values):.3f}, from {min(values):.3f} to {max(values):.3f}; "
            f"{sum(v >= 0.95 for v in values)} of {len(values)} draws at 0.95 or more"
        )
    lines += ["", "![accuracy by draw](classify.png)"]
    text = "\n".join(lines) + "\n"
    (REPORTS / "classify.md").write_text(text)
    plot(draws, REPORTS / "classify.png")
    return text


def plot(draws: list[dict[str, float]], path: Path) -> None:
    plt = pyplot()

    fig, axis = plt.subplots(figsize=(7, 3.8))
    for method in METHODS:
        axis.plot(range(len(draws)), [row[method] for row in draws], marker="o", label=method)
    axis.axhline(0.95, color="grey", linestyle=":", linewidth=1)
    axis.set(xlabel="draw of the examples (seed)", ylabel="accuracy", title="5 examples a topic, minilm")
    axis.legend()
    save_figure(fig, path, dpi=110)


def main() -> None:
    print(write_report(measure()))


if __name__ == "__main__":
    main()
