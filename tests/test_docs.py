"""The docs are checked against the code: the settings reference is the settings models', the CLI reference names
only commands and options the parser has (and all of them), TOML examples load, links lead somewhere."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import pytest

from embedstream.schemas.settings import Settings
from embedstream.workers.cli.parser import parser
from embedstream.workers.docs_reference import with_reference

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
COMMON = {"--config", "--verbose", "--log-format", "--help", "--version"}


def _commands() -> dict[str, set[str]]:
    """Each command (``models build`` style for an action argument's choices too) → its long options."""
    top = parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    found: dict[str, set[str]] = {}
    for name, command in sub.choices.items():
        found[name] = {o for a in command._actions for o in a.option_strings if o.startswith("--")} - COMMON
    return found


def test_the_settings_reference_is_made_from_the_settings_models():
    text = (DOCS / "configuration.md").read_text()
    assert text == with_reference(text), "docs/configuration.md is stale: run `make docs`"
    for field in ("pipeline.output_topic", "kafka.isolation_level", "api.search_mode", "qdrant.collection"):
        assert f"`{field}`" in text


def test_the_cli_reference_names_every_command_and_option_and_nothing_else():
    rows = [line for line in (DOCS / "cli.md").read_text().splitlines() if line.startswith("| `embedstream ")]
    commands = _commands()
    documented: dict[str, set[str]] = {name: set() for name in commands}
    for row in rows:
        usage = re.split(r"(?<!\\)\|", row)[1]  # the first cell (a ``\|`` inside it is text)
        name = usage.split("`embedstream ", 1)[1].split()[0].rstrip("`")
        assert name in commands, f"docs/cli.md documents a command the parser lacks: {name}"
        options = set(re.findall(r"--[a-z][a-z-]*", usage))
        unknown = options - commands[name] - COMMON
        assert not unknown, f"docs/cli.md gives `{name}` options it does not have: {sorted(unknown)}"
        documented[name] |= set(re.findall(r"--[a-z][a-z-]*", row))  # in its usage or its description
    missing = {name: sorted(commands[name] - seen) for name, seen in documented.items() if commands[name] - seen}
    assert not missing, f"options the parser has and docs/cli.md does not show: {missing}"


def _toml_blocks(path: Path) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", path.read_text(), re.S)


def test_every_toml_example_loads_as_settings():
    blocks = [(p.name, b) for p in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))] for b in _toml_blocks(p)]
    assert blocks
    for name, block in blocks:
        data = tomllib.loads(block)
        try:
            Settings.model_validate(data)
        except Exception as exc:  # a setting that does not exist, or a value it refuses
            raise AssertionError(f"a TOML example in {name} does not load: {exc}\n{block}") from exc


def test_links_between_the_docs_lead_to_files_that_exist():
    broken = []
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" not in target and not (path.parent / target).exists():
                broken.append(f"{path.name} → {target}")
    assert broken == []


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    assert max(len(line) for line in text.splitlines() if not line.startswith("|")) <= 400
    assert text.index("make demo") < text.index("## A five-minute tour") and "make test" in text
