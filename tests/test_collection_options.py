"""Qdrant server collections are created with the layout settings ask for: checked on qdrant-client's local
mode where it keeps them, and on the HTTP request qdrant-client sends to a server where it does not."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from embedstream.pipelines.stores import SpaceSpec
from embedstream.pipelines.stores.server import ServerStore
from embedstream.schemas.settings import CollectionOptions, QdrantSettings

pytestmark = pytest.mark.unit

SPACES = [SpaceSpec("minilm", 384, "minilm@1"), SpaceSpec("effnet", 1280, "effnet@1")]
OPTIONS = CollectionOptions(
    shard_number=6,
    replication_factor=2,
    write_consistency_factor=2,
    on_disk_payload=True,
    vectors_on_disk=True,
    hnsw_m=32,
    hnsw_ef_construct=256,
    scalar_quantization=True,
    quantization_quantile=0.98,
)


def test_local_mode_keeps_on_disk_vectors_and_the_model_fence():
    store = ServerStore(QdrantSettings(backend="local", path=":memory:", collection_options=OPTIONS))
    store.ensure_spaces(SPACES)
    info = store._client.get_collection("embeddings")
    vectors = info.config.params.vectors
    assert isinstance(vectors, dict) and all(params.on_disk for params in vectors.values())
    assert store.spaces()["minilm"].model == "minilm@1"


class Recorder(BaseHTTPRequestHandler):
    """Answers like a Qdrant server with no collections yet, and records what it was asked."""

    seen: ClassVar[list[tuple[str, str, Any]]] = []

    def _answer(self, result: Any, wrapped: bool = True) -> None:
        body = json.dumps({"result": result, "status": "ok", "time": 0.0} if wrapped else result).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append((self.command, self.path, body))
        return body

    def do_GET(self) -> None:
        self._record()
        if self.path.endswith("/exists"):
            self._answer({"exists": False})
        else:
            self._answer({"title": "qdrant", "version": "1.15.0"}, wrapped=False)

    def do_PUT(self) -> None:
        self._record()
        self._answer(True if "/index" not in self.path else {"operation_id": 0, "status": "completed"})

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_collection_is_created_with_sharding_replication_hnsw_and_quantization(recorder):
    store = ServerStore(QdrantSettings(backend="server", url=recorder, collection_options=OPTIONS))
    store.ensure_spaces(SPACES)

    (create,) = [
        body
        for method, path, body in Recorder.seen
        if method == "PUT" and path.split("?")[0] == "/collections/embeddings"
    ]
    assert create["shard_number"] == 6 and create["replication_factor"] == 2
    assert create["write_consistency_factor"] == 2 and create["on_disk_payload"] is True
    assert create["hnsw_config"] == {"m": 32, "ef_construct": 256}
    assert create["quantization_config"] == {"scalar": {"type": "int8", "quantile": 0.98, "always_ram": True}}
    assert {name: v["on_disk"] for name, v in create["vectors"].items()} == {"minilm": True, "effnet": True}
    assert create["metadata"]["embedstream_spaces"]["effnet"] == {"dim": 1280, "model": "effnet@1"}
    indexed = {path.split("?")[0] for method, path, _ in Recorder.seen if "/index" in path}
    assert indexed == {"/collections/embeddings/index"}


def test_defaults_leave_the_layout_to_the_server(recorder):
    ServerStore(QdrantSettings(backend="server", url=recorder)).ensure_spaces(SPACES)
    (create,) = [
        body
        for method, path, body in Recorder.seen
        if method == "PUT" and path.split("?")[0] == "/collections/embeddings"
    ]
    for key in ("shard_number", "replication_factor", "hnsw_config", "quantization_config"):
        assert create.get(key) is None
