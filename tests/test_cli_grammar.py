"""What the command line refuses while parsing — before it opens a store, a broker or a model: a file the user
named that cannot be read, a record position or a shard written wrongly. Each is one usage line and exit 2."""

from __future__ import annotations

from importlib import metadata

import pytest

from embedstream.schemas.errors import SettingsError
from embedstream.schemas.settings import Settings
from embedstream.workers.cli import main

pytestmark = pytest.mark.unit


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as ended:
        main(list(argv))
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_a_file_named_on_the_command_line_that_cannot_be_read_is_a_usage_error(capsys, tmp_path):
    assert "cannot read /no/such/picture.jpg: no such file" in _refused(
        capsys, "search", "--image", "/no/such/picture.jpg"
    )
    assert "a folder" in _refused(capsys, "search", "--audio", str(tmp_path))
    vectors = ("models", "import-vectors", "words", "--file", str(tmp_path / "missing.vec"))
    assert "no such file" in _refused(capsys, *vectors)


def test_record_positions_and_shards_are_checked_where_they_are_parsed(capsys):
    assert "is not TOPIC:PARTITION:OFFSET" in _refused(capsys, "ingest", "--skip", "events:2")
    assert "is not I/N with I below N" in _refused(capsys, "ingest", "--shard", "3/2")
    assert "is not I/N" in _refused(capsys, "ingest", "--shard", "1-3")
    with pytest.raises(SettingsError, match=r"pipeline\.skip"):
        Settings.load(pipeline={"skip": ["events:two:5"]})
    assert Settings.load(pipeline={"skip": ["events.v2:3:1041"]}).pipeline.skip == ["events.v2:3:1041"]


def test_version(capsys):
    with pytest.raises(SystemExit) as ended:
        main(["--version"])
    assert ended.value.code == 0 and capsys.readouterr().out.strip() == f"embedstream {metadata.version('embedstream')}"
