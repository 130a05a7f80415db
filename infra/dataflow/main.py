"""The Dataflow Flex Template's entry point: template parameters → embedstream settings → ``embedstream ingest``.

Dataflow's launcher runs ``python main.py --<parameter>=<value> … --runner=DataflowRunner --project=…``. The
parameters that ``metadata.json`` declares become ``EMBEDSTREAM_*`` settings; every other option goes to Beam
unchanged. The settings travel to the workers inside the job (they are part of each step), so the workers need
no environment of their own.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# template parameter → the embedstream setting it sets (docs/configuration.md lists them all)
PARAMETERS = {
    "bootstrap_servers": "EMBEDSTREAM_KAFKA__BOOTSTRAP_SERVERS",
    "topics": "EMBEDSTREAM_KAFKA__TOPICS",
    "topic_pattern": "EMBEDSTREAM_KAFKA__TOPIC_PATTERN",
    "group_id": "EMBEDSTREAM_KAFKA__GROUP_ID",
    "dead_letter_topic": "EMBEDSTREAM_KAFKA__DEAD_LETTER_TOPIC",
    "security_protocol": "EMBEDSTREAM_KAFKA__SECURITY_PROTOCOL",
    "sasl_mechanism": "EMBEDSTREAM_KAFKA__SASL_MECHANISM",
    "qdrant_url": "EMBEDSTREAM_QDRANT__URL",
    "qdrant_collection": "EMBEDSTREAM_QDRANT__COLLECTION",
}
MODES = ("stream", "drain")


def split_arguments(argv: Sequence[str]) -> tuple[dict[str, str], str, list[str]]:
    """(settings as environment variables, ingest mode, Beam's options) from the launcher's arguments."""
    parser = argparse.ArgumentParser(prog="main.py", add_help=False)
    parser.add_argument("--mode", choices=MODES, default="stream")
    for name in PARAMETERS:
        parser.add_argument(f"--{name}")
    known, beam_options = parser.parse_known_args(list(argv))
    settings: dict[str, str] = {}
    for name, variable in PARAMETERS.items():
        value = getattr(known, name)
        if value is None or value == "":
            continue
        if name == "topics":  # a comma-separated list in the template, a JSON list for the settings
            value = "[" + ",".join(f'"{topic.strip()}"' for topic in value.split(",") if topic.strip()) + "]"
        settings[variable] = value
    return settings, known.mode, beam_options


def main(argv: Sequence[str] | None = None) -> int:
    settings, mode, beam_options = split_arguments(sys.argv[1:] if argv is None else argv)
    os.environ.update(settings)
    if "EMBEDSTREAM_QDRANT__URL" in settings:
        os.environ.setdefault("EMBEDSTREAM_QDRANT__BACKEND", "server")
    from embedstream.workers.cli import main as embedstream

    return embedstream(["ingest", "--mode", mode, *beam_options])


if __name__ == "__main__":
    sys.exit(main())
