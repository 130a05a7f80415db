"""The pipeline on other runners: refused where it cannot work, built for Flink and Dataflow, and run with its
DoFns pickled into separate worker processes (Beam's local job service + an EXTERNAL worker pool: the Fn API
boundary Flink and Dataflow use)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from embedstream.pipelines.ingest import build_pipeline, pipeline_options, run_ingest
from embedstream.pipelines.io.kafka_clients import PartitionSpec, committed_offsets, ensure_topics
from embedstream.pipelines.plan import plan_ingest
from embedstream.pipelines.runners import RunnerConfigError, check_runner
from embedstream.pipelines.stores import open_store
from embedstream.workers.broker import free_port
from embedstream.workers.sample_media import sample_photos
from tests.helpers import read_topic, send_raw, text_event, watermarks

pytestmark = pytest.mark.integration

DATAFLOW = [
    "--runner=DataflowRunner",
    "--project=my-project-123",
    "--region=europe-west1",
    "--temp_location=gs://my-bucket/tmp",
]


@pytest.mark.parametrize(
    "args",
    [
        DATAFLOW,
        ["--runner=FlinkRunner", "--flink_master=flink:8081", "--checkpointing_interval=10000"],
        ["--runner=SparkRunner"],
        ["--runner=PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=DOCKER"],
        ["--runner=PortableRunner", "--job_endpoint=jobs.example:8099", "--environment_type=PROCESS"],
    ],
)
def test_the_embedded_store_is_refused_where_workers_run_elsewhere(make_settings, args):
    settings = make_settings()
    with pytest.raises(RunnerConfigError, match="BACKEND=server"):
        check_runner(settings, PipelineOptions(args))
    server = make_settings(qdrant={"backend": "server", "url": "http://qdrant:6333"})
    check_runner(server, PipelineOptions(args))  # a Qdrant server: fine


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
        [
            "--runner=PortableRunner",
            "--job_endpoint=localhost:8099",
            "--environment_type=EXTERNAL",
            "--environment_config=localhost:50000",
        ],
    ],
)
def test_local_runs_keep_the_embedded_store(make_settings, args):
    check_runner(make_settings(), PipelineOptions(args))


def test_a_flink_stream_run_needs_checkpoints(make_settings):
    settings = make_settings(pipeline={"mode": "stream"}, qdrant={"backend": "server", "url": "http://qdrant:6333"})
    with pytest.raises(RunnerConfigError, match="--checkpointing_interval"):
        check_runner(settings, PipelineOptions(["--runner=FlinkRunner", "--flink_master=flink:8081"]))


@pytest.mark.parametrize(
    "args", [[*DATAFLOW, "--streaming"], ["--runner=FlinkRunner", "--flink_master=flink:8081", "--streaming"]]
)
def test_the_pipeline_proto_builds_for_flink_and_dataflow(make_settings, media_models, args):
    settings = make_settings(qdrant={"backend": "server", "url": "http://qdrant:6333"}, pipeline={"mode": "stream"})
    pipeline = beam.Pipeline(options=pipeline_options(settings, args))
    partitions = [PartitionSpec(settings.kafka.topic, p, 0, None) for p in range(3)]
    build_pipeline(pipeline, settings, partitions, plan_ingest(settings), "run-1")
    proto = pipeline.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    for step in ("ReadKafka", "Parse", "EmbedText", "EmbedImages", "EmbedAudio", "Deliver"):
        assert step in names, names
    primitives = [t for t in proto.components.transforms.values() if not t.subtransforms]
    consumed = {pc for t in primitives for pc in t.inputs.values()}
    leaves = [t.unique_name for t in primitives if not set(t.outputs.values()) & consumed]
    assert leaves == ["Deliver"]  # one terminal step: all that a last-leaf-only runner (Dask) computes


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory) -> Iterator[list[str]]:
    """Beam's local job service and an EXTERNAL worker pool, each its own process on loopback."""
    pool_port, job_port = free_port(), free_port()
    logs = tmp_path_factory.mktemp("beam-services")
    # The pool starts each SDK worker as `python -c …`: this environment's python must come first on PATH.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
        stdout=(logs / "pool.log").open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    jobs = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"],
        stdout=(logs / "jobs.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    time.sleep(3)
    yield [
        "--runner=PortableRunner",
        f"--job_endpoint=localhost:{job_port}",
        "--environment_type=EXTERNAL",
        f"--environment_config=localhost:{pool_port}",
    ]
    for process in (jobs, pool):
        process.terminate()
        process.wait(30)


def test_drain_with_workers_in_another_process_text_and_pictures(make_settings, media_models, worker_pool):
    settings = make_settings(kafka={"partitions": 2})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    photo = sample_photos()["chelsea"].read_bytes()
    picture = [("es-id", b"cat"), ("es-modality", b"image")]
    send_raw(
        settings,
        [(f"t{i}".encode(), text_event(f"t{i}", f"external worker sentence {i}"), []) for i in range(20)]
        + [(b"cat", photo, picture), (None, b"{broken", [])],
    )

    result = run_ingest(settings, worker_pool)

    assert result.points_upserted == 21
    store = open_store(settings.qdrant)
    try:
        assert store.count() == 21
    finally:
        store.close()
    assert len(read_topic(settings, settings.kafka.dead_letter_topic)) == 1
    assert committed_offsets(settings.kafka) == watermarks(settings)


def test_a_stream_run_in_another_process_delivers_and_stops_when_asked(make_settings, model_cache, worker_pool):
    settings = make_settings(kafka={"partitions": 1}, pipeline={"mode": "stream"}, media={"modalities": ["text"]})
    ensure_topics(settings.kafka, [settings.kafka.topic])
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_ingest(settings, worker_pool, stop=stop)
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    send_raw(settings, [(f"s{i}".encode(), text_event(f"s{i}", f"streamed sentence {i}"), []) for i in range(30)])
    deadline = time.monotonic() + 120
    while committed_offsets(settings.kafka).get(0) != 30:
        assert time.monotonic() < deadline, "the stream never committed what it read"
        time.sleep(0.5)
    stop.set()
    runner.join(120)
    assert not runner.is_alive() and not errors, errors
