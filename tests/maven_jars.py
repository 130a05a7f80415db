"""Java jars for the tests and benchmarks, fetched once with Maven from a small pom into the user's cache.

``maven_libs(pom, folder)`` runs ``mvn dependency:copy-dependencies`` into ``folder/libs`` the first time and
marks it complete; a file lock keeps parallel runs (pytest-xdist, a bench beside the tests) to one fetch. Used for
Apache Kafka (``apache_kafka.py``), Beam's Flink runner (``flink_job_server.py``) and Beam's Java Kafka IO
(``bench/kafka_read.py``)."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path


class MavenError(RuntimeError):
    """Maven is missing, or could not fetch a pom's dependencies: the message says which."""


def maven_libs(pom: Path, folder: Path, what: str) -> Path:
    """``folder/libs``, holding ``pom``'s runtime dependencies (fetched the first time); ``what`` names them in
    errors."""
    libs, done = folder / "libs", folder / "complete"
    if done.is_file():
        return libs
    folder.mkdir(parents=True, exist_ok=True)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MavenError(f"Maven (mvn) is not installed: it fetches {what} once")
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return libs
        shutil.rmtree(libs, ignore_errors=True)
        command = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
        command += [f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise MavenError(f"mvn could not fetch {what}:\n{result.stdout[-3000:]}")
        done.write_text(pom.read_text())
    return libs
