"""Beam's own Kafka read as an anchor: Python's ``ReadFromKafka`` (a Java cross-language transform) against our
pure-Python ``ReadKafkaPartitions``, on the same topic of Apache Kafka 4.4, in one run.

    python -m bench.kafka_read [--events 50000] [--rounds 2]

Each reader runs a pipeline ``read | Map(value size) | Count`` in a fresh process, twice per round: once for
``SMALL`` records (start-up: runner, expansion, JVM) and once for all ``--events``; records per second is
``(events - SMALL) / (t_all - t_small)``, so start-up is not counted twice. The readers:

* **beam (Prism)**: ``apache_beam.io.kafka.ReadFromKafka`` on the Prism runner; its Java half runs in an
  expansion service assembled from Beam 2.73's module jars (``bench/beam_kafka/pom.xml``: Maven Central does not
  serve Beam's shaded expansion-service jar), which also hosts the Java SDK harness (loopback worker);
* **ours (Prism)**: ``ReadKafkaPartitions`` on the same Prism runner (Python SDK harness in loopback);
* **ours (in-process)**: ``ReadKafkaPartitions`` on Beam's in-process FnApiRunner, what ``embedstream ingest``
  runs by default.

First run fetches the jars with Maven (~140 MB) into ``~/.cache/embedstream/beam-kafka-2.73.0`` and builds Prism
(the locked Beam's version) from the Go module proxy with ``go install`` (~3 min); Beam would otherwise download
Prism from GitHub at run time. Apache Kafka comes from ``tests/apache_kafka.py``. Writes
``bench/reports/kafka_read.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import pyplot, run_phase, save_figure, write_json

REPORTS = Path(__file__).parent / "reports"
POM = Path(__file__).parent / "beam_kafka" / "pom.xml"
JAVA_BEAM = "2.73.0"
SMALL = 30
# One partition: Beam's Java read of a three-partition topic with max_num_records never finished on Prism (2.78
# runner, 2.73 Java harness; five minutes, then DEADLINE_EXCEEDED), while one partition reads in seconds.
PARTITIONS = 1
READERS = ("beam-prism", "ours-prism", "ours-local")


def cache() -> Path:
    from embedstream.schemas.settings import default_cache_dir

    return default_cache_dir()


def expansion_jars() -> Path:
    """Beam's Kafka IO, expansion service and Java harness (``POM``), fetched once."""
    from tests.maven_jars import maven_libs

    return maven_libs(POM, cache() / f"beam-kafka-{JAVA_BEAM}", f"Beam {JAVA_BEAM}'s Kafka expansion service jars")


def prism_binary() -> Path:
    """Prism, the locked Beam's version, built from the Go module proxy once."""
    import apache_beam

    folder = cache() / f"prism-{apache_beam.__version__}"
    binary = folder / "prism"
    if not binary.is_file():
        print(f"building Prism {apache_beam.__version__} with go install (a few minutes, once)…", flush=True)
        env = {**os.environ, "GOBIN": str(folder), "GOFLAGS": "-mod=mod"}
        module = f"github.com/apache/beam/sdks/v2/go/cmd/prism@v{apache_beam.__version__}"
        subprocess.run(["go", "install", module], check=True, env=env)
    return binary


def produce(bootstrap: str, topic: str, events: int) -> None:
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 18)
    for i in range(events):
        text = f"event {i}: a short sentence of the kind a stream of texts carries, with a number {i * 7919 % 10007}"
        value = json.dumps({"schema": 1, "id": f"e{i}", "modality": "text", "text": text}).encode()
        producer.send(topic, key=f"e{i}".encode(), value=value)
    producer.flush()
    producer.close()


def start_expansion_service(libs: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    from embedstream.workers.broker import free_port, port_open

    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                "java",
                "-Xmx1g",
                "-cp",
                f"{libs}/*",
                "org.apache.beam.sdk.expansion.service.ExpansionService",
                str(port),
                "--alsoStartLoopbackWorker",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the expansion service did not start; see {log}")
        time.sleep(0.2)
    return process, f"localhost:{port}"


# --- phases: one pipeline each, in a fresh process --------------------------------------------------------------


def _count_to(path: str) -> Any:
    import apache_beam as beam

    def write(count: int) -> None:
        Path(path).write_text(str(count))

    from apache_beam.transforms.combiners import Count

    return Count.Globally() | beam.Map(write)


def phase(reader: str, bootstrap: str, topic: str, count: int, expansion: str, prism: str) -> dict[str, Any]:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    out = tempfile.mktemp(suffix=".count")
    group = f"bench-{reader}-{time.time_ns()}"
    started = time.perf_counter()
    if reader == "beam-prism":
        from apache_beam.io.kafka import ReadFromKafka

        options = PipelineOptions(["--runner=PrismRunner", f"--prism_location={prism}", "--environment_type=LOOPBACK"])
        config = {
            "bootstrap.servers": bootstrap,
            "auto.offset.reset": "earliest",
            "group.id": group,
            "enable.auto.commit": "false",
        }
        with beam.Pipeline(options=options) as pipeline:
            (
                pipeline
                | ReadFromKafka(
                    consumer_config=config, topics=[topic], max_num_records=count, expansion_service=expansion
                )
                | beam.Map(lambda kv: len(kv[1]))
                | _count_to(out)
            )
    else:
        from dataclasses import replace

        from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

        from embedstream.pipelines.io.kafka_read import ReadKafkaPartitions
        from embedstream.pipelines.io.partition_owner import new_owner_id
        from embedstream.pipelines.io.partition_plan import finish_partitions, plan_partitions
        from embedstream.schemas.settings import KafkaSettings, PipelineSettings

        kafka = KafkaSettings(bootstrap_servers=bootstrap, topic=topic, group_id=group)
        settings = PipelineSettings()
        owner = new_owner_id()
        specs = plan_partitions(kafka, settings.max_event_bytes, True, owner, settings.reader_heartbeat_s)
        left, planned = count, []
        for spec in specs:  # the first ``count`` records, partition by partition (they hold unequal shares)
            take = min(left, (spec.stop or 0) - spec.start) if spec is not specs[-1] else left
            planned.append(replace(spec, stop=spec.start + take))
            left -= take
        specs = planned
        if reader == "ours-prism":
            options = PipelineOptions(
                ["--runner=PrismRunner", f"--prism_location={prism}", "--environment_type=LOOPBACK"]
            )
            pipeline = beam.Pipeline(options=options)
        else:
            pipeline = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([]))
        try:
            with pipeline:
                (
                    pipeline
                    | ReadKafkaPartitions(kafka, settings, specs, owner)
                    | beam.Map(lambda record: len(record.value or b""))
                    | _count_to(out)
                )
        finally:
            finish_partitions(kafka, specs, owner, completed=False)
    seconds = time.perf_counter() - started
    read = int(Path(out).read_text())
    os.unlink(out)
    return {"reader": reader, "records": read, "seconds": seconds}


# --- the run ------------------------------------------------------------------------------------------------------


def measure(events: int, rounds: int) -> dict[str, Any]:
    from tests.apache_kafka import start_kafka

    libs, prism = expansion_jars(), prism_binary()
    work = Path(tempfile.mkdtemp(prefix="bench-kafka-read-"))
    kafka = start_kafka(work / "kafka")
    service = None
    try:
        topic = "bench.kafka-read"
        produce(kafka.bootstrap, topic, events)
        service, expansion = start_expansion_service(libs, work / "expansion.log")
        runs: list[dict[str, Any]] = []
        for reader in READERS:  # warm-up, not counted: the Java service's first expansion and harness start
            run_phase("bench.kafka_read", reader, kafka.bootstrap, topic, str(SMALL), expansion, str(prism))
        for round_ in range(rounds):
            for reader in READERS:
                for count in (SMALL, events):
                    result = run_phase(
                        "bench.kafka_read", reader, kafka.bootstrap, topic, str(count), expansion, str(prism)
                    )
                    assert result["records"] == count, result
                    runs.append({**result, "round": round_, "count": count})
                    print(
                        f"round {round_ + 1}/{rounds} {reader:11s} {count:6d} records: {result['seconds']:.1f} s",
                        flush=True,
                    )
    finally:
        if service is not None:
            service.terminate()
            service.wait(30)
        kafka.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"events": events, "partitions": PARTITIONS, "rounds": rounds, "java_beam": JAVA_BEAM, "runs": runs}


def summarize(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    events, runs = result["events"], result["runs"]
    table: dict[str, dict[str, float]] = {}
    for reader in READERS:
        small = [r["seconds"] for r in runs if r["reader"] == reader and r["count"] == SMALL]
        full = [r["seconds"] for r in runs if r["reader"] == reader and r["count"] == events]
        rates = [(events - SMALL) / max(1e-9, f - s) for s, f in zip(small, full, strict=True)]
        table[reader] = {
            "startup_s": statistics.median(small),
            "records_per_s": statistics.median(rates),
            "total_s": statistics.median(full),
        }
    return table


def report(result: dict[str, Any]) -> None:
    import apache_beam

    table = summarize(result)
    base = table["beam-prism"]["records_per_s"]
    names = {
        "beam-prism": "Beam ReadFromKafka (Java, Prism)",
        "ours-prism": "ReadKafkaPartitions (Prism)",
        "ours-local": "ReadKafkaPartitions (in-process runner)",
    }
    lines = [
        "# Beam's own Kafka read against ours",
        "",
        f"One run: {result['events']:,} text events (~170 bytes) on Apache Kafka 4.4, "
        f"{result['partitions']} partition(s); "
        f"Python Beam {apache_beam.__version__}, Beam's Java Kafka IO {result['java_beam']} (expansion service with a "
        f"loopback Java harness); medians of {result['rounds']} rounds. `python -m bench.kafka_read`.",
        "",
        "| reader | start-up (s, a pipeline of 30 records) | records/s after start-up | vs Beam's | all records (s) |",
        "|---|---|---|---|---|",
    ]
    for reader in READERS:
        row = table[reader]
        lines.append(
            f"| {names[reader]} | {row['startup_s']:.1f} | {row['records_per_s']:,.0f} | "
            f"{row['records_per_s'] / base:.2f}× | {row['total_s']:.1f} |"
        )
    lines += [
        "",
        "Start-up counts the runner, the expansion (Beam's read only: a gRPC call to the Java service) and the",
        "pipeline's end; the Java service itself was started once, and each reader ran one unmeasured 30-record",
        "pipeline first (the service's JVM start and first expansion are not counted).",
        "Records per second: (all − 30) records over (their time − the 30-record time).",
        "Beam's read needs Java, a Java expansion service and a runner that runs Java transforms (here Prism, built",
        "from Go); ours needs none of them and runs on every runner the ingest supports.",
        "",
        "Reading is not what limits an ingest: the encoder takes a few hundred texts a second per 2-core worker",
        "(`bench/reports/ingest_text.md`), tens of times fewer than either read delivers, so Beam's faster",
        "steady-state read would not move an ingest's rate; its start-up and its Java would be paid on every run.",
        "A topic of three partitions read with `max_num_records` through Beam's Java read never finished on Prism",
        "(five minutes, then DEADLINE_EXCEEDED); one partition reads in seconds, so the comparison uses one.",
    ]
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "kafka_read.md").write_text("\n".join(lines) + "\n")
    write_json(REPORTS / "kafka_read.json", {**result, "summary": table}, 2)
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = [names[r].replace(" (", "\n(") for r in READERS]
    left.barh(labels, [table[r]["records_per_s"] for r in READERS], color=["#888", "#2a7", "#27a"])
    left.set_xlabel("records/s after start-up")
    right.barh(labels, [table[r]["startup_s"] for r in READERS], color=["#888", "#2a7", "#27a"])
    right.set_xlabel("start-up (s)")
    right.set_yticks([])
    fig.suptitle(f"Reading {result['events']:,} records from Apache Kafka 4.4")
    save_figure(fig, REPORTS / "kafka_read.png")
    print("\n".join(lines))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--phase":
        reader, bootstrap, topic, count, expansion, prism = sys.argv[2:8]
        print(json.dumps(phase(reader, bootstrap, topic, int(count), expansion, prism)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    report(measure(args.events, args.rounds))


if __name__ == "__main__":
    main()
