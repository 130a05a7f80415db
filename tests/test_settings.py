"""Settings: init > environment > TOML, nested env with __, secrets never printed."""

from __future__ import annotations

import logging

import pytest

from embedstream.schemas.errors import NotFoundError, SettingsError
from embedstream.schemas.settings import Settings

TOML = """
[kafka]
bootstrap_servers = "toml-host:9092"
topic = "from-toml"
sasl_plain_password = "toml-secret"

[qdrant]
backend = "server"
url = "https://qdrant.example:6333"
api_key = "qdrant-secret-key"

[pipeline]
max_batch_tokens = 2048
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "embedstream.toml"
    path.write_text(TOML)
    return path


@pytest.mark.unit
def test_toml_then_env_then_init(config_file, monkeypatch):
    settings = Settings.load(config_file)
    assert settings.kafka.bootstrap_servers == "toml-host:9092" and settings.pipeline.max_batch_tokens == 2048

    monkeypatch.setenv("EMBEDSTREAM_KAFKA__TOPIC", "from-env")
    monkeypatch.setenv("EMBEDSTREAM_PIPELINE__MAX_BATCH_TOKENS", "1536")
    settings = Settings.load(config_file)
    assert settings.kafka.topic == "from-env" and settings.pipeline.max_batch_tokens == 1536
    assert settings.kafka.bootstrap_servers == "toml-host:9092"  # untouched fields still come from TOML

    settings = Settings.load(config_file, pipeline={"max_batch_tokens": 512})
    assert settings.pipeline.max_batch_tokens == 512


@pytest.mark.unit
def test_config_path_from_environment(config_file, monkeypatch):
    monkeypatch.setenv("EMBEDSTREAM_CONFIG", str(config_file))
    assert Settings.load().kafka.topic == "from-toml"


@pytest.mark.integration
def test_secrets_pass_to_clients_but_never_print(config_file, caplog):
    settings = Settings.load(config_file)
    assert settings.kafka.client_config()["sasl_plain_password"] == "toml-secret"
    assert settings.qdrant.api_key is not None and settings.qdrant.api_key.get_secret_value() == "qdrant-secret-key"
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s / %r", settings, settings)
    for text in (str(settings), repr(settings), settings.model_dump_json(), caplog.text):
        assert "toml-secret" not in text and "qdrant-secret-key" not in text


@pytest.mark.unit
def test_security_options_pass_through(monkeypatch):
    monkeypatch.setenv("EMBEDSTREAM_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("EMBEDSTREAM_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("EMBEDSTREAM_KAFKA__SSL_CAFILE", "/etc/ca.pem")
    config = Settings.load(kafka={"client_options": {"client_id": "ingest-7"}}).kafka.client_config()
    assert config["security_protocol"] == "SASL_SSL" and config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["ssl_cafile"] == "/etc/ca.pem" and config["client_id"] == "ingest-7"


@pytest.mark.unit
def test_invalid_value_names_the_field(monkeypatch):
    monkeypatch.setenv("EMBEDSTREAM_PIPELINE__MAX_BATCH_TOKENS", "zero")
    with pytest.raises(SettingsError, match="max_batch_tokens"):
        Settings.load()


@pytest.mark.unit
def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(NotFoundError, match=r"nope\.toml"):
        Settings.load(tmp_path / "nope.toml")
