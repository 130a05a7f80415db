"""Settings: one root ``Settings`` with plain sections, read from init > environment > TOML file.

Environment variables use the ``EMBEDSTREAM_`` prefix and ``__`` between section and field, e.g.
``EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``EMBEDSTREAM_QDRANT__API_KEY=...``.
The TOML file is ``embedstream.toml`` in the working directory, or the path in ``EMBEDSTREAM_CONFIG``,
or the one passed to ``Settings.load``; its tables are the section names (``[kafka]``, ``[qdrant]``...).

Secrets are ``SecretStr``: they print as ``**********`` in reprs and logs and are revealed only where a
client is configured (``KafkaSettings.client_config``, ``QdrantSettings.api_key``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from embedstream.schemas.defaults import (
    MAX_BATCH_SIZE,
    MAX_BATCH_TOKENS,
    MAX_EVENT_BYTES,
    MAX_TEXT_CHARS,
    MEDIA_BATCH_SIZE,
)
from embedstream.schemas.errors import NotFoundError, SettingsError

SKIP_FORM = re.compile(r"[^:]+:\d+:\d+")  # TOPIC:PARTITION:OFFSET (a Kafka topic name holds no colon)

CONFIG_ENV = "EMBEDSTREAM_CONFIG"
DEFAULT_CONFIG_FILE = Path("embedstream.toml")
_config_file: ContextVar[Path | None] = ContextVar("embedstream_config_file", default=None)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "embedstream"


class KafkaSettings(BaseModel):
    """Where events come from and dead letters go. Security options pass straight to kafka-python."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "embedstream.events"
    topics: list[str] | None = Field(
        default=None, description="topics to read (default: [topic]); `topic` stays where produce and replay write"
    )
    topic_pattern: str | None = Field(
        default=None,
        description="read every topic whose whole name matches this regex (Kafka Connect's topics.regex); "
        "topics that appear while streaming are picked up",
    )
    dead_letter_topic: str = "embedstream.dead-letters"
    group_id: str = "embedstream-ingest"
    bootstrap_timeout_ms: int = Field(default=5000, ge=100, description="how long to wait for the first broker")
    partitions: int = Field(default=3, ge=1, description="partitions for topics that embedstream creates")
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    isolation_level: Literal["read_committed", "read_uncommitted"] = Field(
        default="read_committed",
        description="read_committed: records of a producer's open or aborted transaction are never read (Kafka's "
        "transactions); read_uncommitted reads them as they are written",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    client_options: dict[str, Any] = Field(
        default_factory=dict, description="any further kafka-python client options, passed through"
    )

    @field_validator("topic_pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"topic_pattern {pattern!r} is not a regular expression: {exc}") from exc
        return pattern

    def read_topics(self, existing: set[str]) -> list[str]:
        """The topics this configuration reads, given the broker's topics (a pattern never matches the
        dead-letter topic, its replay ledger or the broker's internal ``__`` topics)."""
        if self.topic_pattern is None:
            return list(self.topics or [self.topic])
        own = {self.dead_letter_topic, f"{self.dead_letter_topic}.replayed"}
        pattern = re.compile(self.topic_pattern)
        return sorted(t for t in existing if pattern.fullmatch(t) and t not in own and not t.startswith("__"))

    def client_config(self) -> dict[str, Any]:
        """kafka-python keyword arguments common to consumers, producers and admin clients."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
        }
        for name in ("sasl_mechanism", "sasl_plain_username", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            if value is not None:
                config[name] = value
        for name in ("sasl_plain_password", "ssl_password"):
            secret = getattr(self, name)
            if secret is not None:
                config[name] = secret.get_secret_value()
        config.update(self.client_options)
        return config


class CollectionOptions(BaseModel):
    """How a collection is laid out when embedstream creates it (None: the engine's default). Only
    ``scalar_quantization`` (with its quantile and RAM placement) applies to the embedded store too; the rest
    is for a Qdrant server.

    Sharding spreads a collection over a cluster's nodes (``shard_number``, a multiple of the node count);
    ``replication_factor`` keeps copies of each shard, ``write_consistency_factor`` is how many copies must
    acknowledge a write. On-disk vectors and payload trade latency for memory; ``scalar_quantization`` keeps
    int8 copies of the vectors in RAM for search (4× less memory) and rescoring from the originals."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shard_number: int | None = Field(default=None, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)
    write_consistency_factor: int | None = Field(default=None, ge=1)
    on_disk_payload: bool | None = None
    vectors_on_disk: bool | None = None
    hnsw_m: int | None = Field(default=None, ge=0, description="edges per node of the HNSW graph (server default 16)")
    hnsw_ef_construct: int | None = Field(default=None, ge=4, description="server default 100")
    scalar_quantization: bool = False
    quantization_quantile: float = Field(default=0.99, gt=0.5, le=1.0)
    quantization_always_ram: bool = True
    quantization_oversampling: float = Field(
        default=2.0,
        ge=1.0,
        description="a search of a quantized collection takes this many times the hits by int8, then rescores them "
        "with the original vectors (measured: bench/reports/store_scale.md)",
    )
    indexing_threshold_kb: int | None = Field(
        default=None,
        ge=1,
        description="a segment's vectors (KB) before the engine builds its HNSW index (Qdrant's optimizers "
        "indexing_threshold); below it searches are exact. Applies to the embedded store too",
    )


class QdrantSettings(BaseModel):
    """Which Qdrant to write to.

    ``edge`` (default): the embedded qdrant-edge engine at ``path`` (one process per path).
    ``server``: a Qdrant server or cluster at ``url`` with ``api_key``, through qdrant-client.
    ``local``: qdrant-client's local mode at ``path`` (or ``:memory:``): the server API without a server.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["edge", "server", "local"] = "edge"
    path: str = ".embedstream/qdrant"
    url: str | None = None
    api_key: SecretStr | None = None
    collection: str = Field(default="embeddings", min_length=1)
    timeout_s: float = Field(default=30.0, gt=0)
    min_free_mb: int = Field(
        default=256,
        ge=0,
        description="edge: writes stop with a clear error below this much free disk space (the engine memory-maps "
        "its files, and a write into a full disk kills the process); 0 turns the check off",
    )
    collection_options: CollectionOptions = Field(default_factory=CollectionOptions)
    hnsw_ef: int | None = Field(
        default=None,
        ge=1,
        description="candidates a dense search explores in the HNSW graph: higher = better recall, slower; None: the "
        "engine's default (measured: bench/reports/store_scale.md)",
    )
    index_when_quiet_s: float | None = Field(
        default=5.0,
        gt=0,
        description="edge, stream mode: once the stream has written nothing for this long, build the HNSW index of "
        "what awaits it (the embedded engine searches new vectors by brute force until then, and the build holds "
        "the process, so it waits for a quiet moment); None: only after a drain run",
    )
    index_min_vectors: int = Field(
        default=20_000,
        ge=1,
        description="edge, stream mode: ...and at least this many vectors await the index (below it brute force is "
        "about as fast: ~1.5 ms a search at 20k 384-d vectors)",
    )
    snapshot_dir: str = Field(
        default=".embedstream/snapshots",
        description="where `serve` writes the snapshots POST /store/snapshot asks for (the CLI takes any path)",
    )


class ModelSettings(BaseModel):
    """Which encoders run and how ONNX Runtime is tuned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_model: str = "minilm"
    image_model: str = Field(default="effnet", description="pictures and video frames: their own space")
    image_text_model: str = Field(
        default="effnet-conse", description="pictures into the text model's space (text queries find them); '' = off"
    )
    audio_model: str = Field(default="voice", description="sounds and video audio segments")
    cache_dir: Path = Field(default_factory=lambda: default_cache_dir() / "models")
    bm25: bool = Field(
        default=True, description="text points also get a sparse BM25 vector 'bm25' (keyword and hybrid search)"
    )
    chunking: Literal["sentences", "off"] = Field(
        default="sentences",
        description="a text longer than the text model reads: cut into chunks at sentence ends ('sentences'), "
        "each a point, with a document point for the whole; 'off': one point from the first tokens (truncated)",
    )
    chunk_tokens: int = Field(
        default=0, ge=0, description="most tokens a chunk holds, special tokens included; 0: the text model's limit"
    )
    chunk_overlap: int = Field(default=32, ge=0, description="tokens neighbouring chunks may share")
    sentence_points: bool = Field(
        default=True,
        description="a text cut into chunks also gets one point per sentence (payload level 'sentence'), so a "
        "question about one fact deep inside a long document finds it by meaning; costs about twice a long text's "
        "encoder time and ~8x its points (bench/reports/retrieval.md); off: passages only",
    )
    intra_op_threads: int = Field(default=0, ge=0, description="0: ONNX Runtime's default (physical cores)")
    inter_op_threads: int = Field(default=1, ge=0, description="only matters for parallel graph execution")
    intra_op_spinning: bool | None = Field(
        default=None,
        description="ORT's threads spin between runs (on) or sleep, leaving the cores to other threads (off). None: "
        "off for the ingest's picture and sound models, whose decoders share the cores (measured: 0.77 -> 0.88-1.0 "
        "of the shared-core ceiling for pictures, bench/reports/ingest_media.md), and for the query encoders, "
        "which share them with the API's threads (bench/reports/serve_load.md); ORT's default (on) elsewhere",
    )
    cpu_mem_arena: bool = Field(
        default=True, description="ONNX Runtime's CPU memory arena (bench/reports/ort_threads.md)"
    )
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])

    def sleeping_unless_set(self) -> ModelSettings:
        """These settings with ORT's threads sleeping between runs unless ``intra_op_spinning`` is set: for a
        session whose runs alternate with other work on the same cores (decoders, an HTTP server's threads)."""
        return self if self.intra_op_spinning is not None else self.model_copy(update={"intra_op_spinning": False})


class PipelineSettings(BaseModel):
    """How the ingest pipeline batches, bounds its bundles and reports progress."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["drain", "stream"] = "drain"
    max_batch_tokens: int = Field(default=MAX_BATCH_TOKENS, ge=1, description="padded tokens per encoder run")
    max_batch_size: int = Field(default=MAX_BATCH_SIZE, ge=1)
    sort_window: int = Field(default=1024, ge=1, description="events buffered to sort by length before encoding")
    upsert_batch_size: int = Field(default=256, ge=1)
    max_records_per_bundle: int = Field(default=2048, ge=1)
    max_bundle_seconds: float = Field(default=5.0, gt=0, description="drain mode: the longest a bundle reads")
    max_latency_ms: int = Field(
        default=500,
        ge=1,
        description="stream mode: the longest an event waits for more input before its bundle closes (it closes "
        "sooner when the reader has caught up with the partition); a backlog still fills whole batches",
    )
    poll_timeout_ms: int = Field(default=500, ge=1, description="the longest one poll of an idle partition blocks")
    max_event_bytes: int = Field(default=MAX_EVENT_BYTES, ge=1)
    max_text_chars: int = Field(default=MAX_TEXT_CHARS, ge=1)
    progress_interval_s: float = Field(default=5.0, gt=0)
    dead_letter_retry_s: float = Field(
        default=120.0,
        ge=0,
        description="how long dead letters the dead-letter topic does not take are sent again before the bundle "
        "fails uncommitted (a rerun reads its records again)",
    )
    reader_heartbeat_s: float = Field(
        default=5.0, gt=0, description="a reader renews its partitions' ownership claims this often, mid-bundle too"
    )
    tombstone_retention_s: float = Field(
        default=7 * 24 * 3600.0,
        ge=0,
        description=(
            "how long a delete's tombstone is kept (the replay horizon): an event older than a delete that arrives "
            "within it loses to the delete; after it, such a replay could re-create what was deleted"
        ),
    )
    shard: str = Field(
        default="0/1",
        pattern=r"^\d+/[1-9]\d*$",
        description="I/N: this instance reads the partitions p with p mod N == I (a StatefulSet ordinal can set I)",
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="serve /metrics, /healthz, /readyz on this port (off when None)"
    )
    metrics_host: str = Field(default="127.0.0.1", description="0.0.0.0 in a container, for Prometheus to scrape")
    lag_interval_s: float = Field(default=5.0, gt=0, description="how often consumer lag is read from the broker")
    discovery_interval_s: float = Field(
        default=30.0, gt=0, description="stream mode: how often new topics (pattern) and partitions are looked for"
    )
    skip: list[str] = Field(
        default_factory=list,
        description="records (topic:partition:offset) to dead-letter unread: the way past one that stops a run",
    )
    output_topic: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "also publish every point written and every delete applied to this Kafka topic (keyed by point id, "
            "created compacted if missing, acknowledged before offsets commit); off when None"
        ),
    )
    output_format: Literal["qdrant", "binary"] = Field(
        default="qdrant",
        description="qdrant: the JSON Qdrant's Kafka Connect sink reads; binary: float32 vectors after a JSON header",
    )
    output_collection: str | None = Field(
        default=None, min_length=1, description="the collection_name the records name (None: qdrant.collection)"
    )

    @field_validator("skip")
    @classmethod
    def _skip_positions(cls, skip: list[str]) -> list[str]:
        wrong = [s for s in skip if not SKIP_FORM.fullmatch(s)]
        if wrong:
            raise ValueError(f"{wrong[0]!r} is not TOPIC:PARTITION:OFFSET (e.g. events:2:1041)")
        return skip

    @field_validator("shard")
    @classmethod
    def _shard_in_range(cls, shard: str) -> str:
        index, count = (int(x) for x in shard.split("/"))
        if index >= count:
            raise ValueError(f"shard {shard}: I must be below N")
        return shard

    def shard_of(self) -> tuple[int, int]:
        index, count = self.shard.split("/")
        return int(index), int(count)


class MediaSettings(BaseModel):
    """How pictures and sounds are fetched, decoded and bounded, and how a video's vectors are fused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: list[Literal["text", "image", "audio", "video"]] | None = Field(
        default=None,
        description="what this pipeline embeds; None = every modality whose models are built (others: dead letters)",
    )
    roots: list[Path] = Field(default_factory=list, description="folders file:// URIs may point into")
    remote: bool = Field(default=False, description="fetch http(s):// URIs, and s3:// gs:// through fsspec")
    remote_hosts: list[str] = Field(
        default_factory=list, description="http(s): only these hosts ('name' or '*.domain'); empty: any public host"
    )
    remote_networks: list[str] = Field(
        default_factory=list,
        description="http(s): networks (CIDR) that may be fetched although not public, e.g. an internal media "
        "server; loopback, private, link-local (cloud metadata) and shared addresses are refused otherwise",
    )
    fetch_timeout_s: float = Field(default=10.0, gt=0, description="http(s): connect and each read")
    fetch_retries: int = Field(default=2, ge=0, description="http(s): more tries after a transient failure")
    max_image_pixels: int = Field(default=40_000_000, ge=1, description="larger pictures are refused unread")
    max_audio_seconds: float = Field(default=600.0, gt=0)
    min_audio_seconds: float = Field(default=0.25, ge=0, description="shorter sounds (once trimmed) say too little")
    silence_dbfs: float = Field(default=-55.0, description="a sound whose loudest 30 ms stays below this is silent")
    decode_threads: int = Field(default=2, ge=1, description="threads decoding media beside the encoder")
    decode_timeout_s: float = Field(
        default=60.0, gt=0, description="an event whose fetch + decode takes longer is dead-lettered (decode_timeout)"
    )
    batch_size: int = Field(default=MEDIA_BATCH_SIZE, ge=1, description="pictures or sound clips per encoder batch")
    previews: bool = Field(
        default=True, description="keep a small preview in the payload (160-px JPEG, first 6 s of sound as OGG)"
    )
    fused_weights: tuple[float, float] = Field(
        default=(1.0, 1.0), description="visual and audio weights in a video's fused vector"
    )

    @field_validator("remote_networks")
    @classmethod
    def _networks_parse(cls, networks: list[str]) -> list[str]:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"remote_networks: {network!r} is not a network (CIDR): {exc}") from exc
        return networks

    @field_validator("fused_weights")
    @classmethod
    def _weights_make_a_vector(cls, weights: tuple[float, float]) -> tuple[float, float]:
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"fused_weights must be >= 0 and not both 0, got {weights}")
        return weights


class ApiKey(BaseModel):
    """One API key, stored as the SHA-256 of the key (``embedstream api-key new`` makes both)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="who holds it (in logs and metrics, never the key)")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")
    scope: Literal["read", "admin"] = Field(
        default="read", description="read: search, recommend, points, spaces; admin: also what writes or reveals"
    )


class ApiSettings(BaseModel):
    """Who may use ``embedstream serve``'s API, and how it is served."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: list[ApiKey] = Field(
        default_factory=list,
        description="with keys, every request but /healthz (and the page's files) needs one: 'Authorization: "
        "Bearer KEY' or 'api-key: KEY'; without keys, serve binds only to loopback unless --insecure",
    )
    metrics_public: bool | None = Field(
        default=None,
        description="/metrics without a key: unset follows the keys (public only when no keys are configured); "
        "true or false says so outright. It is rate-limited like any call",
    )
    forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or networks; '*' for "
        "any). None by default: a client cannot choose the address its rate limit is counted under",
    )
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed to call the API (none)")
    rate_per_s: float | None = Field(default=None, gt=0, description="requests per second per key (None: no limit)")
    rate_burst: int = Field(default=20, ge=1, description="requests a key may send at once above its rate")
    batch_queries: bool = Field(
        default=True,
        description="text searches that arrive together are encoded in one model call and searched in one store "
        "call (no added wait: a lone query runs at once)",
    )
    query_runners: int = Field(
        default=1,
        ge=1,
        description="batches of text searches answered at once, each on its own thread (api.batch_queries); a "
        "second one encodes a batch while another is in the model or the store: more requests/s at moderate load on "
        "machines with cores to spare, a slower lone query on 2 cores (bench/reports/serve_load.md)",
    )
    search_mode: Literal["auto", "dense", "sparse", "hybrid"] = Field(
        default="auto",
        description="the mode a text search runs in when it names none (the API's mode and the CLI's --mode "
        "override it): auto is hybrid where the collection has keyword vectors (model.bm25), else dense — the best "
        "of the candidates on facts deep in long documents, paraphrases and keywords together "
        "(bench/reports/retrieval.md)",
    )
    hybrid_fusion: Literal["confidence", "rrf", "dbsf"] = Field(
        default="confidence",
        description="how hybrid search fuses its dense and keyword lists: confidence (each list weighed by how far "
        "its best hit stands out), rrf (reciprocal rank) or dbsf (score distribution); see bench/reports/retrieval.md",
    )
    tls_certfile: Path | None = Field(default=None, description="serve HTTPS with this certificate (PEM)")
    tls_keyfile: Path | None = Field(default=None, description="and this private key (PEM)")


class Settings(BaseSettings):
    """The root of all configuration."""

    model_config = SettingsConfigDict(
        env_prefix="EMBEDSTREAM_", env_nested_delimiter="__", extra="forbid", frozen=True, env_parse_none_str="null"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @model_validator(mode="after")
    def _output_topic_not_read(self) -> Settings:
        """The embeddings topic must not be one the ingest reads (it would embed its own output) or the DLQ."""
        output, kafka = self.pipeline.output_topic, self.kafka
        if output is None:
            return self
        own = {kafka.dead_letter_topic, f"{kafka.dead_letter_topic}.replayed"}
        if output in own or output in kafka.read_topics({output}):
            raise ValueError(f"pipeline.output_topic {output!r} is a topic the ingest reads or dead-letters to")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_path()))

    @classmethod
    def load(cls, config_file: Path | str | None = None, /, **overrides: Any) -> Settings:
        """Settings from ``overrides`` > environment > ``config_file`` (or the default TOML file)."""
        if config_file is not None and not Path(config_file).is_file():
            raise NotFoundError(f"config file {config_file} does not exist")
        token = _config_file.set(Path(config_file) if config_file is not None else None)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise _settings_error(exc) from exc
        finally:
            _config_file.reset(token)

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """A validated copy with some fields of some sections changed, e.g.
        ``settings.replace(pipeline={"mode": "stream"})``. Settings are frozen once loaded (a DoFn, a thread and
        the API may hold the same object); this is how a command applies its flags."""
        data = self.model_dump()
        for section, fields in sections.items():
            data[section] = {**data[section], **fields}
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            raise _settings_error(exc) from exc


def _settings_error(exc: ValidationError) -> SettingsError:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return SettingsError(f"invalid settings: {where}: {first['msg']}")


def config_path() -> Path:
    chosen = _config_file.get()
    if chosen is not None:
        return chosen
    from_env = os.environ.get(CONFIG_ENV)
    return Path(from_env) if from_env else DEFAULT_CONFIG_FILE
