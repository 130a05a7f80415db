"""The HTTP API, served for real (``embedstream serve`` in a subprocess on a loopback port) over a store the
real pipeline filled with text, photos and voice clips: every endpoint, a valid OpenAPI schema, 4xx (never
500) for bad requests, and ``serve --ingest`` answering while it ingests from Kafka."""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from embedstream.onnx_models.corpus import corpus_path, documents_path
from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import committed_offsets, ensure_topics
from embedstream.pipelines.io.partition_owner import Claim, owners_group
from embedstream.pipelines.stores import SpaceSpec, open_store
from embedstream.schemas.point import point_id
from embedstream.workers.broker import free_port
from embedstream.workers.produce import produce_files
from embedstream.workers.sample_media import sample_photos, sample_voices
from tests.helpers import Server, send_raw, settings_env, shared_settings, text_event, watermarks
from tests.http_site import Site, drip

CORPUS = corpus_path()
DOCUMENTS = documents_path()  # long articles: chunked


@pytest.fixture(scope="module")
def served(tansu_broker, media_models, tmp_path_factory) -> Iterator[tuple[Server, object]]:
    tmp = tmp_path_factory.mktemp("api")
    settings = shared_settings(tansu_broker, media_models, tmp, "api")
    produce_files(
        settings,
        [CORPUS, DOCUMENTS, sample_photos()["chelsea"].parent, *list(sample_voices().values())[:6]],
        progress=False,
    )
    run_ingest(settings)
    server = Server(settings)
    yield server, settings
    server.stop()


def post(server: Server, path: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=60, **kwargs)


@pytest.mark.integration
def test_search_by_text_picture_sound_and_point(served):
    server, _ = served
    text = post(server, "/search", json={"text": "which planets can I see without a telescope", "k": 3})
    assert text.status_code == 200 and text.json()["space"] == "minilm"
    assert text.json()["hits"][0]["payload"]["metadata"]["topic"] == "astronomy"

    cat = post(server, "/search", json={"text": "a photo of a cat", "modality": "image", "k": 2}).json()
    assert cat["hits"][0]["payload"]["id"] == "chelsea.jpg"

    coffee = sample_photos()["coffee"].read_bytes()
    by_picture = post(
        server, "/search/file", files={"file": ("q.jpg", coffee, "image/jpeg")}, data={"kind": "image", "k": "2"}
    )
    assert by_picture.status_code == 200, by_picture.text
    assert by_picture.json()["space"] == "effnet" and by_picture.json()["hits"][0]["payload"]["id"] == "coffee.jpg"

    voices = list(sample_voices().values())
    by_sound = post(
        server,
        "/search/file",
        files={"file": ("q.flac", voices[1].read_bytes(), "audio/flac")},
        data={"kind": "audio", "k": "1", "modality": "audio", "where": json.dumps({"id": voices[0].name})},
    ).json()
    assert by_sound["space"] == "voice" and [h["payload"]["id"] for h in by_sound["hits"]] == [voices[0].name]

    cat_id = point_id("image", "chelsea.jpg")
    like = post(server, "/search", json={"point_id": cat_id, "space": "effnet", "k": 3}).json()
    assert like["query"] == "point" and cat_id not in [h["id"] for h in like["hits"]] and len(like["hits"]) == 3


@pytest.mark.integration
def test_keyword_and_hybrid_search_modes(served):
    server, _ = served
    line = json.loads(CORPUS.read_text().splitlines()[7])["text"]
    rare = max(line.split(), key=len).strip(".,;:!?")  # a long word of one corpus text
    for mode in ("sparse", "hybrid"):
        found = post(server, "/search", json={"text": rare, "mode": mode, "k": 5, "modality": "text"})
        assert found.status_code == 200, found.text
        assert line in [hit["payload"]["text"] for hit in found.json()["hits"]], (mode, rare)
    assert post(server, "/search", json={"text": rare, "mode": "fuzzy"}).status_code == 422


@pytest.mark.integration
def test_recommend_points_and_spaces(served):
    server, settings = served
    planets = post(server, "/search", json={"text": "planets and telescopes", "k": 2}).json()["hits"]
    bread = post(server, "/search", json={"text": "baking bread dough", "k": 1}).json()["hits"]
    positive, negative = [h["id"] for h in planets], [bread[0]["id"]]
    body = {"positive": positive, "negative": negative, "space": "minilm", "k": 5}
    recommended = post(server, "/recommend", json=body)
    assert recommended.status_code == 200
    hits = recommended.json()["hits"]
    assert all(h["payload"]["metadata"]["topic"] == "astronomy" for h in hits[:3])
    assert not {h["id"] for h in hits} & set(positive + negative)

    point = httpx.get(f"{server.url}/points/{planets[0]['id']}", params={"with_vectors": "true"}).json()
    assert point["payload"]["text"] == planets[0]["payload"]["text"] and len(point["vectors"]["minilm"]) == 384

    spaces = httpx.get(f"{server.url}/spaces").json()
    by_name = {s["name"]: s for s in spaces["spaces"]}
    articles = article_points(settings)
    assert spaces["points"] == 520 + articles + 6 + 6
    assert by_name["minilm"] == {
        "name": "minilm",
        "dim": 384,
        "model": "minilm@1",
        "points": 520 + articles + 6,
        "state": "steady",  # no migration (tests/test_migration.py)
        "searched_model": "minilm@1",
        "to_model": None,
        "backfilled": None,
        "backfill": None,
    }
    assert by_name["effnet"]["points"] == 6 and by_name["voice"]["points"] == 6 and by_name["fused"]["dim"] == 1536


def article_points(settings) -> int:
    """The long articles' points: each one's chunks (passages and sentences, as the default chunker cuts it) and
    its document point."""
    from embedstream.onnx_models.chunking import chunker_for
    from embedstream.onnx_models.text_encoder import TextEncoder

    chunker = chunker_for(TextEncoder.load(settings.model.cache_dir, "minilm"), settings.model)
    assert chunker is not None and chunker.sentences
    texts = [json.loads(line)["text"] for line in DOCUMENTS.read_text().splitlines() if line.strip()]
    return sum(len(chunker.chunks(text)) + 1 for text in texts)


@pytest.mark.integration
def test_openapi_is_valid_and_metrics_count_requests(served):
    from openapi_spec_validator import validate

    server, _ = served
    schema = httpx.get(f"{server.url}/openapi.json").json()
    validate(schema)
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(schema)))
    assert refs and refs <= set(schema["components"]["schemas"])  # no dangling reference
    components = schema["components"]["schemas"]

    def named(ref: str) -> dict:
        return components[ref.rsplit("/", 1)[1]]

    def body_of(path: str, media_type: str) -> dict:
        return schema["paths"][path]["post"]["requestBody"]["content"][media_type]["schema"]

    forms = [named(alt["$ref"]) for alt in body_of("/search", "application/json")["anyOf"]]
    text_form, point_form = sorted(forms, key=lambda f: "text" not in f["properties"])
    assert text_form["required"] == ["text"] and "point_id" not in text_form["properties"]
    assert point_form["properties"]["point_id"]["format"] == "uuid"
    assert all(f["additionalProperties"] is False for f in forms)  # so no body can be both
    form = named(body_of("/search/file", "multipart/form-data")["$ref"])
    assert set(form["required"]) == {"file", "kind"} and form["properties"]["kind"]["enum"] == ["image", "audio"]
    assert {"bearer", "apiKey"} <= set(schema["components"]["securitySchemes"])
    assert "security" in schema["paths"]["/spaces"]["get"] and "security" not in schema["paths"]["/healthz"]["get"]
    httpx.get(f"{server.url}/healthz")
    before = _batched_queries(httpx.get(f"{server.url}/metrics").text)
    assert httpx.post(f"{server.url}/search", json={"text": "planets", "k": 1}).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'embedstream_http_requests_total{endpoint="/healthz",status="200"}' in metrics
    assert "embedstream_http_request_seconds_bucket" in metrics
    assert _batched_queries(metrics) == before + 1  # the text query went through the batcher, and was counted


def _batched_queries(metrics: str) -> float:
    """The sum of the query batch size histogram: how many text queries were answered in batches."""
    found = re.search(r"^embedstream_query_batch_size_sum (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.integration
def test_bad_requests_get_a_4xx_with_a_reason_never_a_500(served):
    server, settings = served
    jpeg = sample_photos()["rocket"].read_bytes()
    big = io.BytesIO(b"x" * (settings.pipeline.max_event_bytes + 10))
    cases: list[tuple[str, int, dict[str, Any]]] = [
        ("/search", 422, dict(json={"point_id": "not-a-uuid"})),
        ("/search", 404, dict(json={"point_id": "00000000-0000-0000-0000-000000000000", "space": "minilm"})),
        ("/search", 400, dict(json={"text": "a text", "space": "voice"})),  # a text cannot search the voice space
        ("/search", 422, dict(json={"text": "both", "point_id": point_id("image", "chelsea.jpg")})),
        ("/search", 422, dict(json={"text": "x", "k": 0})),
        ("/search", 422, dict(json={"text": "x", "unknown": 1})),
        ("/search", 422, dict(content=b"{not json", headers={"content-type": "application/json"})),
        ("/search", 415, dict(content=b"a text", headers={"content-type": "text/plain"})),
        ("/search", 415, dict(files={"file": ("r.jpg", jpeg, "image/jpeg")}, data={"kind": "image"})),
        (
            "/search/file",
            422,
            dict(files={"file": ("t.jpg", jpeg[: len(jpeg) // 3], "image/jpeg")}, data={"kind": "image"}),
        ),
        ("/search/file", 422, dict(files={"file": ("n.wav", b"RIFF nonsense", "audio/wav")}, data={"kind": "audio"})),
        ("/search/file", 422, dict(files={"file": ("r.jpg", jpeg, "image/jpeg")}, data={"kind": "video"})),
        (
            "/search/file",
            422,
            dict(files={"file": ("r.jpg", jpeg, "image/jpeg")}, data={"kind": "image", "where": "{oops"}),
        ),
        ("/search/file", 422, dict(data={"kind": "image"}, files={"other": ("r.jpg", jpeg, "image/jpeg")})),
        ("/search/file", 413, dict(files={"file": ("big.bin", big, "image/jpeg")}, data={"kind": "image"})),
        ("/search/file", 415, dict(json={"text": "not a file"})),
    ]
    for path, status, request in cases:
        response = post(server, path, **request)
        assert response.status_code == status, (path, request, response.text)
        assert response.json()["detail"], request
    undecodable = post(
        server, "/search/file", files={"file": ("t.jpg", jpeg[:500], "image/jpeg")}, data={"kind": "image"}
    )
    assert undecodable.json()["reason"] == "undecodable"
    assert post(server, "/recommend", json={"positive": [], "space": "minilm"}).status_code == 422
    missing = post(server, "/recommend", json={"positive": ["00000000-0000-0000-0000-000000000001"], "space": "minilm"})
    assert missing.status_code == 404
    assert httpx.get(f"{server.url}/points/nope").status_code == 422  # not a UUID: the schema says format uuid
    assert httpx.get(f"{server.url}/points/{point_id('text', 'never-sent')}").status_code == 404


@pytest.mark.integration
@pytest.mark.smoke
def test_serve_with_ingest_answers_while_it_ingests(make_settings, media_models):
    """The embedded store is single-process: serve --ingest runs both in one process, sharing the store."""
    settings = make_settings()
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    server = Server(settings, "--ingest")
    try:
        for wave in range(3):
            send_raw(
                settings,
                [(None, text_event(f"w{wave}-{i}", f"wave {wave} sentence {i} about harbours"), []) for i in range(50)],
            )
            deadline = time.monotonic() + 60
            while httpx.get(f"{server.url}/healthz").json()["points"] < 50 * (wave + 1):
                assert time.monotonic() < deadline, "the API never saw the ingested points"
                time.sleep(0.5)
            hits = post(server, "/search", json={"text": f"wave {wave} sentence 7 about harbours", "k": 1}).json()[
                "hits"
            ]
            assert hits[0]["payload"]["id"].startswith(f"w{wave}-")
    finally:
        output = server.stop()
    assert server.process.returncode == 0, output
    assert committed_offsets(settings.kafka) == watermarks(settings)  # it finished its bundle and committed


CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parents[1] / ".embedstream" / "test-artifacts"


@pytest.mark.browser
def test_the_page_searches_by_text_and_by_dropped_picture_in_chromium(served):
    """Debian's chromium, headless, driven by Playwright (no browser download): type a query, see results; drop a
    picture, see thumbnails. The screenshots land in .embedstream/test-artifacts/."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "install Debian's chromium (make setup does: apt-get install chromium)"
    server, _ = served
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(server.url)
            page.wait_for_function("document.querySelectorAll('#space option').length > 1")
            page.fill("#query", "a photo of a cat")
            page.press("#query", "Enter")
            page.wait_for_selector("#results li.hit")
            first = page.locator("#results li.hit").first
            assert "chelsea.jpg" in first.inner_text()
            assert (first.locator("img").get_attribute("src") or "").startswith("data:image/jpeg")
            page.fill("#query", "planets visible without a telescope")
            page.press("#query", "Enter")
            first_snippet = "document.querySelector('#results li.hit .snippet')?.textContent.toLowerCase() ?? ''"
            page.wait_for_function(f"({first_snippet}).includes('telescope')")  # times out if it never renders
            assert re.fullmatch(r"-?\d+\.\d{3}", page.locator("#results li.hit .score").first.inner_text())
            page.screenshot(path=str(SCREENSHOTS / "search-text.png"), full_page=True)

            page.check("#documents")  # grouped by document: a long article, its passage marked where it sits
            page.fill("#query", "why is the full moon a bad time to look at craters")
            page.press("#query", "Enter")
            page.wait_for_selector("#results li.document mark")
            first_doc = page.locator("#results li.document").first
            assert "article-night-sky" in first_doc.inner_text() and "chars " in first_doc.inner_text()
            # the sentence that answers, marked where it sits (a sentence point, not the 256-token passage)
            assert "craters cast no shadows" in first_doc.locator("mark").first.inner_text()
            page.screenshot(path=str(SCREENSHOTS / "search-documents.png"), full_page=True)
            page.uncheck("#documents")

            page.set_input_files("#file", str(sample_photos()["rocket"]))
            page.wait_for_function("document.querySelector('#results li.hit strong')?.textContent === 'rocket.jpg'")
            assert page.locator("#results li.hit img").count() >= 3
            voice = list(sample_voices().values())[1]
            page.set_input_files("#file", str(voice))
            page.wait_for_selector("#results li.hit audio")
            page.screenshot(path=str(SCREENSHOTS / "search-by-voice.png"), full_page=True)
            assert (SCREENSHOTS / "search-text.png").stat().st_size > 10_000
        finally:
            browser.close()


@pytest.mark.integration
def test_serve_with_ingest_exits_non_zero_when_its_pipeline_dies(make_settings, media_models):
    """A pipeline that cannot run (here: another live reader holds its partitions) must not leave a process that
    serves the API and silently ingests nothing: the process exits non-zero and says why."""
    settings = make_settings(kafka={"partitions": 1}, pipeline={"reader_heartbeat_s": 0.5})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    group = owners_group(settings.kafka.group_id)
    beating = KafkaConsumer(bootstrap_servers=[settings.kafka.bootstrap_servers], group_id=group)
    stop = threading.Event()

    def other_reader() -> None:  # a live reader of partition 0 that beats every 0.3 s
        while not stop.wait(0.3):
            stamp = Claim.of("other:1:live", time.time()).encode()
            beating.commit({TopicPartition(settings.kafka.topic, 0): OffsetAndMetadata(stamp, "", -1)})

    thread = threading.Thread(target=other_reader, daemon=True)
    thread.start()
    port = free_port()
    try:
        process = subprocess.run(
            [sys.executable, "-m", "embedstream.workers.cli", "serve", "--ingest", "--port", str(port)],
            env=settings_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop.set()
        thread.join()
        beating.close()
    assert process.returncode != 0
    assert "--shard" in process.stderr and "ingestion stopped" in process.stderr


@pytest.mark.integration
def test_healthz_fails_when_the_in_process_pipeline_has_stopped(make_settings, model_cache):
    from fastapi.testclient import TestClient

    from embedstream.workers.api import create_app

    settings = make_settings()
    store = open_store(settings.qdrant)
    store.ensure_spaces([SpaceSpec("minilm", 384, "minilm@1")])
    store.close()
    problem: list[str] = []
    app = create_app(settings, health=lambda: problem[0] if problem else None)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        problem.append(
            f"ingestion stopped with an error: StoreLockedError: store path {settings.qdrant.path} is in use"
        )
        answer = client.get("/healthz")
        assert answer.status_code == 503 and answer.json()["reason"] == "ingest_stopped"
        assert settings.qdrant.path not in answer.text  # an open endpoint names no path
        problem.clear()
        app.state.searcher.store.close_owned()
        shutil.rmtree(settings.qdrant.path)  # the store's volume goes away under the API
        gone = client.get("/healthz")
    assert gone.status_code == 503 and gone.json()["reason"] == "store_unavailable", gone.text
    assert settings.qdrant.path not in gone.text and "qdrant" not in gone.text.lower()


@pytest.mark.integration
def test_serve_with_ingest_exits_without_closing_the_store_when_its_pipeline_will_not_stop(
    make_settings, media_models, tmp_path
):
    """A pipeline stuck in a bundle (a fetch that takes its whole, long, time limit) must not have the store
    closed under it."""
    site = Site("127.0.0.1", {"/stuck.jpg": drip})  # a byte a second
    media = {"remote": True, "remote_networks": ["127.0.0.1/32"], "fetch_timeout_s": 600, "decode_timeout_s": 600}
    settings = make_settings(media=media)
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    server = Server(settings, "--ingest", "--stop-timeout", "3")
    try:
        uri = f"{site.url}/stuck.jpg"
        event = json.dumps({"schema": 1, "id": "stuck", "modality": "image", "uri": uri}).encode()
        send_raw(settings, [(b"stuck", event, [])])
        time.sleep(4)  # the reader has handed it to the decode pool, which now waits on the dripping server
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=60)
        output = server.process.stdout.read() if server.process.stdout else ""
    finally:
        site.close()
    assert server.process.returncode == 3, output
    assert "did not stop within 3s" in output and "without closing the store" in output
