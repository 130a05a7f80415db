"""Logging for the command line: text or one JSON object a line, the project's loggers at INFO (DEBUG with
``-v``), noise from libraries turned down."""

from __future__ import annotations

import json
import logging
import time


def _not_beam_import_noise(record: logging.LogRecord) -> bool:
    # Beam warns at import time about optional Google Cloud clients that embedstream never uses.
    return not str(record.msg).startswith("apitools not found")


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line (``--log-format json``): what log collectors parse without patterns."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(verbose: bool, log_format: str = "text") -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_beam_import_noise)
        if log_format == "json":
            formatter = JsonLogFormatter()
            formatter.converter = time.gmtime
            handler.setFormatter(formatter)
    logging.getLogger("embedstream").setLevel(logging.DEBUG if verbose else logging.INFO)
    # kafka-python logs every connection at ERROR on a refused bootstrap; our one-line error says it better.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    # ... but its connection failures still reach pipelines/io/kafka_diagnosis.py, which names their cause in that
    # error; they are shown only with --verbose, and never below WARNING (its DEBUG lines print every request and
    # response: SASL passwords and tokens, and the fetched records' bytes).
    net = logging.getLogger("kafka.net")
    net.setLevel(logging.WARNING)
    net.propagate = verbose
