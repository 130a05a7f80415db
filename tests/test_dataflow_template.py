"""The Dataflow Flex Template: its declared parameters are the ones its entry point reads, and that entry point
runs a real ingest (here on Beam's in-process runner; on Dataflow the launcher adds --runner=DataflowRunner)."""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from embedstream.schemas.settings import Settings
from tests.helpers import send_raw, settings_env, stored_ids, text_event

pytestmark = pytest.mark.infra

TEMPLATE = Path(__file__).parents[1] / "infra" / "dataflow"
ENTRY: dict[str, Any] = runpy.run_path(str(TEMPLATE / "main.py"))


@pytest.mark.unit
def test_metadata_declares_exactly_the_parameters_main_reads() -> None:
    metadata = json.loads((TEMPLATE / "metadata.json").read_text())
    declared = {p["name"]: p for p in metadata["parameters"]}
    assert set(declared) == set(ENTRY["PARAMETERS"]) | {"mode"}
    assert metadata["sdkInfo"]["language"] == "PYTHON" and metadata["streaming"] is True
    for parameter in declared.values():
        assert parameter["label"] and parameter["helpText"]
        for regex in parameter.get("regexes", []):
            re.compile(regex)
    examples = {"bootstrap_servers": "k1:9092,k2:9092", "qdrant_url": "https://q:6333", "mode": "drain"}
    for name, value in examples.items():
        assert all(re.fullmatch(r, value) for r in declared[name].get("regexes", [])), name
    assert not re.fullmatch(declared["bootstrap_servers"]["regexes"][0], "k1:9092,")


@pytest.mark.unit
def test_parameters_become_settings_and_the_rest_goes_to_beam() -> None:
    settings, mode, beam = ENTRY["split_arguments"](
        ["--topics=a.events, b.events", "--qdrant_url=https://q:6333", "--runner=DataflowRunner", "--region=x"]
    )
    assert mode == "stream" and beam == ["--runner=DataflowRunner", "--region=x"]
    assert settings["EMBEDSTREAM_KAFKA__TOPICS"] == '["a.events","b.events"]'
    assert settings["EMBEDSTREAM_QDRANT__URL"] == "https://q:6333"


@pytest.mark.integration
def test_the_entry_point_drains_a_topic_into_the_store(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    send_raw(settings, [(None, text_event(f"e{i}", f"template event number {i}"), []) for i in range(12)])
    env = settings_env(settings)
    for name in ("EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS", "EMBEDSTREAM_KAFKA__GROUP_ID"):
        env.pop(name)  # these come as template parameters instead
    parameters = [
        f"--bootstrap_servers={settings.kafka.bootstrap_servers}",
        f"--topics={settings.kafka.topic}",
        f"--group_id={settings.kafka.group_id}",
        "--mode=drain",
    ]
    done = subprocess.run(
        [sys.executable, str(TEMPLATE / "main.py"), *parameters], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert stored_ids(settings) == {f"e{i}" for i in range(12)}
