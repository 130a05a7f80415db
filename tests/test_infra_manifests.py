"""infra/ is checked the way a cluster or a CI linter would check it, with the offline tools these machines have.

yamllint (every YAML file), hadolint (every Dockerfile), ``docker-compose config`` plus the compose
specification's JSON schema, ``kubectl kustomize`` rendered and validated by kubernetes-validate --strict, the
FlinkDeployment against the operator's own CRD schema (vendored) with unknown fields refused, and every
``EMBEDSTREAM_*`` variable the files set must be a setting embedstream accepts — a typo there would otherwise
surface only in production, as a default silently used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions
from pydantic_core import to_jsonable_python

from embedstream.pipelines.runners import check_runner, remote_workers
from embedstream.schemas.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.infra]

ROOT = Path(__file__).parents[1]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "compose"
DOCKERFILES = [INFRA / "docker" / "Dockerfile", INFRA / "docker" / "Dockerfile.beam", INFRA / "dataflow" / "Dockerfile"]
KUBERNETES_VERSION = "1.29.0"


def tool(name: str) -> str:
    """An executable from this environment (the dev extras install the validators) or from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make setup` installs the validators, `make docker` docker-compose")
    return found


def run(*command: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def compose_env(**extra: str) -> dict[str, str]:
    keys = '[{"name": "app", "sha256": "' + "0" * 64 + '", "scope": "read"}]'
    return {**os.environ, "QDRANT_API_KEY": "not-a-real-key", "EMBEDSTREAM_API_KEYS": keys, **extra}


def kustomize(overlay: str) -> list[dict[str, Any]]:
    rendered = run(tool("kubectl"), "kustomize", str(INFRA / "k8s" / overlay))
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def test_every_yaml_file_passes_yamllint() -> None:
    files = sorted(str(p) for p in INFRA.rglob("*.y*ml"))
    assert len(files) >= 12
    run(tool("yamllint"), "--strict", "-c", str(INFRA / ".yamllint.yaml"), *files)


def test_every_dockerfile_passes_hadolint() -> None:
    run(tool("hadolint"), *map(str, DOCKERFILES))


def test_hadolint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install -y curl\n")  # untagged base, no pinning, no --no-install
    done = subprocess.run([tool("hadolint"), str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3006" in done.stdout


@pytest.mark.parametrize("files", [["compose.yaml"], ["compose.yaml", "compose.ci.yaml"]], ids=["prod", "ci"])
def test_compose_files_render_and_match_the_compose_spec(files: list[str], tmp_path: Path) -> None:
    args = [a for name in files for a in ("-f", str(COMPOSE / name))]
    rendered = run(tool("docker-compose"), *args, "config", env=compose_env())
    merged = tmp_path / "merged.yaml"
    merged.write_text(rendered)
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *(str(COMPOSE / f) for f in files))
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(merged))
    services = yaml.safe_load(rendered)["services"]
    if files == ["compose.yaml"]:
        assert set(services) == {"kafka", "qdrant", "ingest", "serve", "prometheus"}
        assert services["ingest"]["command"][:3] == ["ingest", "--mode", "stream"]
        assert services["ingest"]["environment"]["EMBEDSTREAM_QDRANT__BACKEND"] == "server"
    else:
        assert services["serve-embedded"]["network_mode"] == "service:kafka"
        assert services["kafka"]["entrypoint"] == ["embedstream"]


def test_compose_refuses_to_start_without_the_qdrant_api_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "QDRANT_API_KEY"}
    done = subprocess.run(
        [tool("docker-compose"), "-f", str(COMPOSE / "compose.yaml"), "config", "-q"], capture_output=True, env=env
    )
    assert done.returncode != 0 and b"QDRANT_API_KEY" in done.stderr


@pytest.mark.parametrize("overlay", ["base", "flink"])
def test_kustomize_output_is_valid_kubernetes(overlay: str, tmp_path: Path) -> None:
    documents = kustomize(overlay)
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(documents))
    report = run(tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(rendered))
    kinds = {doc["kind"] for doc in documents}
    # Only the operators' custom resources lack a built-in schema (they are checked below and by their CRDs).
    unknown = set(re.findall(r"Couldn't find schema for kind (\w+)", report))
    assert unknown <= {"ServiceMonitor", "FlinkDeployment"}, report
    assert "ERROR" not in report
    if overlay == "base":
        assert {"StatefulSet", "Deployment", "Service", "Secret", "ServiceMonitor"} <= kinds
    else:
        assert "StatefulSet" not in kinds and "FlinkDeployment" in kinds


def test_the_ingest_statefulset_takes_its_shard_from_the_pod_ordinal() -> None:
    (ingest,) = [d for d in kustomize("base") if d["kind"] == "StatefulSet"]
    replicas = ingest["spec"]["replicas"]
    env = {e["name"]: e for e in ingest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["EMBEDSTREAM_PIPELINE__SHARD"]["value"] == f"$(POD_INDEX)/{replicas}"  # N follows the replicas
    for ordinal in range(replicas):  # what each pod ends up with is a valid shard
        shard = env["EMBEDSTREAM_PIPELINE__SHARD"]["value"].replace("$(POD_INDEX)", str(ordinal))
        assert Settings.load(pipeline={"shard": shard}).pipeline.shard_of() == (ordinal, replicas)


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused wherever it lists the fields (Kubernetes' strict validation)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        listed = "properties" in schema and "additionalProperties" not in schema
        if listed and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def flink_schema() -> dict[str, Any]:
    schema = json.loads((INFRA / "k8s" / "flink" / "schema" / "flinkdeployment-v1beta1.json").read_text())
    # Every resource has these; a CRD's schema leaves them to Kubernetes.
    implicit = {"apiVersion": {"const": "flink.apache.org/v1beta1"}, "kind": {"const": "FlinkDeployment"}}
    schema["properties"] |= {**implicit, "metadata": {"type": "object"}}
    return strict(schema)


def test_the_flink_deployment_matches_the_operators_crd() -> None:
    (flink,) = [d for d in kustomize("flink") if d["kind"] == "FlinkDeployment"]
    jsonschema.validate(flink, flink_schema())
    sidecars = flink["spec"]["taskManager"]["podTemplate"]["spec"]["containers"]
    assert any(c.get("args") == ["--worker_pool"] for c in sidecars)  # the Beam worker pool beside each slot


def test_the_crd_check_refuses_what_the_operator_would() -> None:
    flink = yaml.safe_load((INFRA / "k8s" / "flink" / "flink-deployment.yaml").read_text())
    for broken in ({"flinkVersion": "v0_1"}, {"taskManagr": {"replicas": 2}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**flink, "spec": {**flink["spec"], **broken}}, flink_schema())


def infra_settings() -> dict[str, dict[str, str]]:
    """Every set of EMBEDSTREAM_* variables the infra files give a process, by where it comes from."""
    found: dict[str, dict[str, str]] = {}
    base = kustomize("base")
    (config,) = [d for d in base if d["kind"] == "ConfigMap"]
    (secret,) = [d for d in base if d["kind"] == "Secret"]
    found["k8s"] = {**config["data"], **secret["stringData"]}
    rendered = run(
        tool("docker-compose"),
        "-f",
        str(COMPOSE / "compose.yaml"),
        "-f",
        str(COMPOSE / "compose.ci.yaml"),
        "config",
        env=compose_env(),
    )
    for name, service in yaml.safe_load(rendered)["services"].items():
        variables = {k: str(v) for k, v in (service.get("environment") or {}).items() if k.startswith("EMBEDSTREAM_")}
        if variables:
            found[f"compose {name}"] = variables
    return found


def test_every_setting_the_infra_files_set_exists_and_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    groups = infra_settings()
    assert {"k8s", "compose ingest", "compose serve", "compose serve-embedded"} <= set(groups)
    for where, variables in groups.items():
        with monkeypatch.context() as patch:
            for name in [n for n in os.environ if n.startswith("EMBEDSTREAM_")]:
                patch.delenv(name)
            for name, value in variables.items():
                patch.setenv(name, value)
            settings = Settings.load()
        for name, value in variables.items():
            section, field = name.removeprefix("EMBEDSTREAM_").lower().split("__", 1)
            read = getattr(getattr(settings, section), field)
            if hasattr(read, "get_secret_value"):
                read = read.get_secret_value()
            read = to_jsonable_python(read)
            if isinstance(read, (dict, list)):  # a JSON value: what it says must be what was read
                given = json.loads(value)
                if isinstance(read, dict):
                    read = {k: v for k, v in read.items() if k in given}  # unset fields keep their defaults
                assert read == given, f"{where}: {name}={value} was read as {read!r}"
            else:
                assert str(read) == value, f"{where}: {name}={value} was read as {read!r}"


def test_the_flink_launcher_arguments_pass_embedstreams_runner_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    (launcher,) = [d for d in kustomize("flink") if d["metadata"]["name"] == "ingest-launcher"]
    args = launcher["spec"]["template"]["spec"]["containers"][0]["args"]
    beam_args = [a for a in args if a.startswith("--") and not a.startswith(("--mode", "--log-format"))]
    options = PipelineOptions(beam_args)
    assert remote_workers(options) is not None  # workers in the task managers, not beside the launcher
    for name, value in infra_settings()["k8s"].items():
        monkeypatch.setenv(name, value)
    check_runner(Settings.load(pipeline={"mode": "stream"}), options)  # server store: accepted
    with pytest.raises(ValueError, match="backend"):
        check_runner(Settings.load(qdrant={"backend": "edge"}), options)
