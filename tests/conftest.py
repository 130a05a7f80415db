"""Fixtures: real brokers (tansu, Apache Kafka), the really exported minilm model, per-test topics and store paths.

``broker`` is tansu unless a module or test is marked ``@pytest.mark.brokers("tansu", "kafka")``: then each of its
tests that uses a broker runs once per broker (ids ``[tansu]``, ``[kafka]``). Apache Kafka starts once per session,
on first use, with a second SASL_SSL listener for the security tests (``tests/apache_kafka.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from embedstream.onnx_models.export import build
from embedstream.pipelines.plan import FUSED_SPACE
from embedstream.pipelines.stores import SpaceSpec
from embedstream.pipelines.stores.edge import EdgeStore
from embedstream.schemas.settings import Settings, default_cache_dir
from embedstream.workers.broker import Broker, free_port, start_broker
from tests.apache_kafka import ApacheKafka, start_kafka
from tests.tcp_proxy import TcpProxy

MODEL_CACHE = Path(os.environ.get("EMBEDSTREAM_TEST_MODEL_CACHE", default_cache_dir() / "models"))


@pytest.fixture(scope="session", autouse=True)
def _quiet_kafka_logs() -> None:
    logging.getLogger("kafka").setLevel(logging.WARNING)


BROKER_KINDS = ("tansu", "kafka")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "brokers(*kinds): run each test using a broker once per kind (tansu, kafka)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("brokers")
    if marker is not None and "broker_kind" in metafunc.fixturenames:
        kinds = marker.args or BROKER_KINDS
        assert set(kinds) <= set(BROKER_KINDS), kinds
        metafunc.parametrize("broker_kind", kinds)


@pytest.fixture
def broker_kind() -> str:
    """Which broker ``broker`` is: tansu, unless the test is marked ``brokers`` (then parametrized)."""
    return "tansu"


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """tansu on a free 127.0.0.1 port for the whole session (topics are unique per test)."""
    running = start_broker(log_dir=tmp_path_factory.mktemp("tansu"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """Apache Kafka 4.4 (KRaft, one node) for the whole session, with a SASL_SSL listener beside PLAINTEXT."""
    running = start_kafka(tmp_path_factory.mktemp("apache-kafka"), secure=True)
    yield running
    running.stop()


@pytest.fixture
def broker(broker_kind: str, request: pytest.FixtureRequest) -> Broker | ApacheKafka:
    """The broker this test runs on (both have ``bootstrap``)."""
    return request.getfixturevalue("tansu_broker" if broker_kind == "tansu" else "apache_kafka")


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The minilm model exported from the pip-shipped weights (built once if the cache lacks it)."""
    build("minilm", MODEL_CACHE)
    return MODEL_CACHE


@pytest.fixture(scope="session")
def media_models(model_cache: Path) -> Path:
    """The picture and sound models too (effnet, effnet-conse, voice), built once if missing."""
    for name in ("effnet", "effnet-conse", "voice"):
        build(name, model_cache)
    return model_cache


@pytest.fixture(scope="session")
def int8_cache(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache holding the base minilm build and its int8 variant (the user's cache is left alone)."""
    from embedstream.onnx_models.corpus import corpus_texts
    from embedstream.onnx_models.export.quantize import build_int8
    from embedstream.onnx_models.registry import load_manifest

    cache = tmp_path_factory.mktemp("int8-cache")
    base, folder = load_manifest(model_cache, "minilm")
    shutil.copytree(folder, cache / "minilm" / base.version)
    build_int8(cache, "minilm", texts=corpus_texts()[:260])
    return cache


@pytest.fixture
def make_settings(broker: Broker | ApacheKafka, model_cache: Path, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a fresh topic, dead-letter topic, group and store path; sections can be overridden."""

    def factory(**sections: dict[str, Any]) -> Settings:
        name = f"t{uuid.uuid4().hex[:10]}"
        kafka = {
            "bootstrap_servers": broker.bootstrap,
            "topic": f"{name}.events",
            "dead_letter_topic": f"{name}.dlq",
            "group_id": f"{name}.group",
            "partitions": 3,
            **sections.pop("kafka", {}),
        }
        qdrant = {"backend": "edge", "path": str(tmp_path / f"{name}-store"), **sections.pop("qdrant", {})}
        model = {"cache_dir": str(model_cache), **sections.pop("model", {})}
        pipeline = {"progress_interval_s": 1.0, **sections.pop("pipeline", {})}
        return Settings.load(kafka=kafka, qdrant=qdrant, model=model, pipeline=pipeline, **sections)

    return factory


@pytest.fixture
def edge_store(tmp_path: Path) -> Iterator[EdgeStore]:
    """An embedded store with a video's spaces: pictures (3-d), sounds (2-d) and the fused space (5-d)."""
    store = EdgeStore(str(tmp_path), "videos")
    store.ensure_spaces([SpaceSpec("img", 3, "i@1"), SpaceSpec("aud", 2, "a@1"), SpaceSpec(FUSED_SPACE, 5, "f")])
    yield store
    store.close()


# Every test says what it needs, by one of these markers (a module's ``pytestmark`` or the test's own):
# ``unit`` needs no broker, no model build, no store on disk, no CLI process or browser (``make test-fast``);
# ``integration`` needs real parts; ``browser`` drives chromium. ``infra`` (what infra/ ships) goes beside one.
KINDS = ("unit", "integration", "browser")
# Fixtures that bring real parts: a test that asks for one cannot be ``unit``.
REAL_PARTS = {
    "broker",
    "tansu_broker",
    "apache_kafka",
    "make_settings",
    "model_cache",
    "int8_cache",
    "media_models",
    "served",
    "media_settings",
    "media_store",
    "docker_daemon",
    "edge_store",
    "proxied_broker",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check each test's marker: exactly one kind, and no real part behind a ``unit`` one."""
    wrong = []
    for item in items:
        kinds = [kind for kind in KINDS if item.get_closest_marker(kind) is not None]
        real = set(getattr(item, "fixturenames", ())) & REAL_PARTS
        if len(kinds) != 1:
            wrong.append(f"{item.nodeid}: marked {kinds or 'nothing'}; mark it one of {', '.join(KINDS)}")
        elif kinds == ["unit"] and real:
            wrong.append(f"{item.nodeid}: marked unit but uses {sorted(real)}")
    if wrong:
        raise pytest.UsageError("tests marked wrongly:\n" + "\n".join(wrong))


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[TcpProxy]:
    """tansu advertising a proxy's port, so every client connection runs through the proxy."""
    broker_port = free_port()
    proxy = TcpProxy(broker_port)
    broker = start_broker(port=broker_port, log_dir=tmp_path, advertised_port=proxy.port)
    yield proxy
    proxy.close()
    broker.stop()
