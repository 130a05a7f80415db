"""A snapshot is a file from elsewhere: ``store restore`` writes nothing outside its target, whatever the archive
holds, and checks the models of the spaces the restored store really records (not only those its description
names)."""

from __future__ import annotations

import io
import json
import pickle
import sqlite3
import tarfile
from pathlib import Path

import pytest

from embedstream.pipelines.ingest import run_ingest
from embedstream.pipelines.io.kafka_clients import ensure_topics
from embedstream.pipelines.stores import SpaceSpec, open_store
from embedstream.pipelines.stores.snapshot import META, SnapshotError, SnapshotInfo, restore, write_archive
from embedstream.schemas.errors import EmbedstreamError
from embedstream.schemas.settings import Settings
from tests.helpers import fill
from tests.helpers import store_cli as cli

pytestmark = pytest.mark.integration


def meta(**overrides: object) -> bytes:
    record = {"format": 1, "collection": "embeddings", "backend": "edge", "taken_at": "2026-12-07T00:00:00+00:00"}
    return json.dumps({**record, "points": 0, "spaces": {}, "models": {}, **overrides}).encode()


def crafted(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    """A tar with a valid description first, then ``members`` exactly as given (``data``: file contents)."""
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo(META)
        body = meta()
        info.size = len(body)
        archive.addfile(info, io.BytesIO(body))
        for member in members:
            content = (data or {}).get(member.name, b"")
            if member.isfile():
                member.size = len(content)
                archive.addfile(member, io.BytesIO(content))
            else:
                archive.addfile(member)
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    return member


def symlink_chain(outside: Path) -> list[tarfile.TarInfo]:
    """The shape of CVE-2025-4517: nested folders with long names, symlinks that climb back up through them until
    the resolved path passes PATH_MAX, a last link out of the target, then a file written through it."""
    members, step = [], "d" * 247
    path = "store"
    for i in range(16):
        path = f"{path}/{step}"
        members.append(entry(path, tarfile.DIRTYPE))
        members.append(entry(f"store/l{i}", tarfile.SYMTYPE, f"{path}"))
    members.append(entry("store/escape", tarfile.SYMTYPE, "l15/" + "../" * 17 + str(outside).lstrip("/")))
    members.append(entry("store/escape/pwned"))
    return members


@pytest.mark.parametrize(
    "members",
    [
        pytest.param([entry("store/../escaped")], id="dot-dot"),
        pytest.param([entry("store/a/../../escaped")], id="dot-dot-nested"),
        pytest.param([entry("store/link", tarfile.SYMTYPE, "/"), entry("store/link/escaped")], id="symlink"),
        pytest.param([entry("store/hard", tarfile.LNKTYPE, "/etc/passwd")], id="hardlink"),
        pytest.param([entry("store/dev", tarfile.CHRTYPE)], id="device"),
        pytest.param([entry("store/fifo", tarfile.FIFOTYPE)], id="fifo"),
        pytest.param("chain", id="symlink-chain-past-path-max"),
    ],
)
def test_a_crafted_snapshot_is_refused_before_anything_is_written(tmp_path, members):
    outside = tmp_path / "outside"
    outside.mkdir()
    if members == "chain":
        members = symlink_chain(outside)
    archive = crafted(tmp_path / "evil.tar", members, {"store/../escaped": b"x", "store/escape/pwned": b"x"})
    target = tmp_path / "restored"
    settings = Settings.load(qdrant={"backend": "edge", "path": str(target)}, model={"cache_dir": str(tmp_path)})
    with pytest.raises(SnapshotError, match="refused"):
        restore(settings, archive)
    assert not list(outside.iterdir()) and not (tmp_path / "escaped").exists()
    assert not target.exists() or not any(target.rglob("*"))


def test_an_absolute_member_is_never_written(tmp_path):
    """A member named by an absolute path, even outside ``store/``, refuses the whole archive."""
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = crafted(tmp_path / "abs.tar", [entry(str(outside / "abs"))], {str(outside / "abs"): b"x"})
    settings = Settings.load(qdrant={"backend": "edge", "path": str(tmp_path / "restored")})
    with pytest.raises(SnapshotError, match="refused"):
        restore(settings, archive)
    assert not list(outside.iterdir())


def test_an_edited_description_does_not_let_an_unchecked_model_through(make_settings, tmp_path):
    """The snapshot's ``models`` list edited to ``{}``: the restored store still records minilm@1, which is not
    built where it is restored, so the restore is refused (and leaves nothing behind)."""
    settings = make_settings(kafka={"partitions": 1})
    ensure_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letter_topic])
    fill(settings, 20)
    run_ingest(settings)
    archive = tmp_path / "backup.tar"
    assert cli(settings, "snapshot", str(archive)).returncode == 0
    edited = tmp_path / "edited.tar"
    with tarfile.open(archive) as source, tarfile.open(edited, "w") as target:
        for member in source.getmembers():
            body = source.extractfile(member) if member.isfile() else None
            if member.name == META:
                record = json.loads(body.read()) | {"models": {}, "spaces": {}}  # type: ignore[union-attr]
                content = json.dumps(record).encode()
                member.size = len(content)
                target.addfile(member, io.BytesIO(content))
            else:
                target.addfile(member, body)
    elsewhere = settings.replace(qdrant={"path": str(tmp_path / "elsewhere")}, model={"cache_dir": str(tmp_path)})
    refused = cli(elsewhere, "restore", str(edited))
    assert refused.returncode == 2 and "minilm@1 is not built here" in refused.stderr, refused.stderr
    assert not (tmp_path / "elsewhere").exists() or not any((tmp_path / "elsewhere").rglob("*"))


class Touch:
    """What a crafted pickle does when it is loaded: here, only create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_local_mode_snapshot_with_a_crafted_point_is_refused_unloaded(tmp_path):
    """qdrant-client's local mode unpickles every point when it opens a store: a restore must not open (or let
    anything later open) a store whose points are not plain data."""
    store_dir = tmp_path / "made"
    settings = Settings.load(
        qdrant={"backend": "local", "path": str(store_dir)}, model={"cache_dir": str(tmp_path / "models")}
    )
    made = open_store(settings.qdrant)
    made.ensure_spaces([SpaceSpec("bm25", 0, "bm25@1", sparse=True)])
    made.close()
    marker = tmp_path / "PWNED"
    (database,) = store_dir.rglob("storage.sqlite")
    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO points (id, point) VALUES (?, ?)", ("evil", pickle.dumps(Touch(marker))))
    info = SnapshotInfo(
        "embeddings", "local", "2026-12-07T00:00:00+00:00", 1, {}, {}
    )  # a description that names no model: nothing to refuse there
    archive = tmp_path / "evil.tar"
    write_archive(store_dir, archive, info)
    target = settings.replace(qdrant={"path": str(tmp_path / "restored")})
    with pytest.raises(EmbedstreamError, match="not a point's plain data"):
        restore(target, archive)
    assert not marker.exists() and not (tmp_path / "restored").exists()
