"""Beam's Flink job server for the tests: Beam 2.50's Flink 1.16 runner (the newest Maven Central serves here) and
its dependencies, fetched once with Maven into ``~/.cache/embedstream/beam-flink-1.16-2.50.0/libs``, and a small jar
whose manifest starts ``FlinkJobServerDriver`` with them on its class path — what Beam's shaded job-server jar
would be. Beam's Python ``FlinkRunner`` starts it itself (``--flink_job_server_jar``) with an embedded Flink
(``--flink_master=[local]``)."""

from __future__ import annotations

import fcntl
import zipfile
from pathlib import Path

from embedstream.schemas.settings import default_cache_dir
from tests.maven_jars import maven_libs

BEAM, FLINK = "2.50.0", "1.16"
POM = Path(__file__).parent / "flink" / "pom.xml"
MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"


# Flink 1.16 on Java 17 reflects into these packages (Kryo, its closure cleaner): the module system must open them,
# or a streaming job fails ("module java.base does not opens java.lang"). A manifest can say so for `java -jar`.
OPENS = [
    f"java.base/{package}"
    for package in (
        "java.lang",
        "java.lang.reflect",
        "java.io",
        "java.net",
        "java.nio",
        "sun.nio.ch",
        "java.text",
        "java.time",
        "java.util",
        "java.util.concurrent",
        "java.util.concurrent.atomic",
        "java.util.concurrent.locks",
    )
]


def _header(name: str, value: str) -> list[str]:
    """One manifest header folded into lines of at most 72 bytes (continuations start with a space)."""
    text = f"{name}: {value}"
    return [text[:70]] + [" " + text[i : i + 69] for i in range(70, len(text), 69)]


def _manifest(libs: list[str]) -> str:
    lines = ["Manifest-Version: 1.0", f"Main-Class: {MAIN}"]
    lines += _header("Class-Path", " ".join(f"libs/{name}" for name in libs))
    lines += _header("Add-Opens", " ".join(OPENS))
    return "\r\n".join(lines) + "\r\n"


def job_server_jar(cache: Path | None = None) -> Path:
    """The launcher jar (next to its ``libs/``), built the first time."""
    root = (cache or default_cache_dir()) / f"beam-flink-{FLINK}-{BEAM}"
    jar = root / "job-server-2.jar"  # -2: the manifest opens java.base to Flink
    if jar.is_file():
        return jar
    libs = maven_libs(POM, root, f"Beam {BEAM}'s Flink runner for the tests")
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jar.is_file():
            return jar
        partial = jar.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w") as archive:
            archive.writestr("META-INF/MANIFEST.MF", _manifest(sorted(p.name for p in libs.glob("*.jar"))))
        partial.rename(jar)
    return jar
