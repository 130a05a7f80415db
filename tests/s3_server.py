"""An S3 server on 127.0.0.1 (moto's, from PyPI) with one bucket: persistent storage for a tansu broker.

tansu keeps topics in memory unless told ``--storage-engine s3://BUCKET/``; with this server behind it, its
records and committed offsets survive ``kill -9`` of the broker, which is what a broker-restart test needs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3

from embedstream.workers.broker import free_port, port_open

READY_TIMEOUT_S = 30.0


class S3Server:
    """``moto_server`` on a free port, a bucket created in it; ``env`` is what a client (tansu) needs to use it."""

    def __init__(self, log_dir: Path, bucket: str = "tansu") -> None:
        self.port = free_port()
        self.bucket = bucket
        self.endpoint = f"http://127.0.0.1:{self.port}"
        moto = Path(sys.executable).parent / "moto_server"
        self._log = open(log_dir / f"moto-{self.port}.log", "wb")  # noqa: SIM115 - closed in close()
        self._process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not port_open("127.0.0.1", self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"moto_server did not start; see {self._log.name}")
            time.sleep(0.05)
        boto3.client("s3", endpoint_url=self.endpoint, **self._credentials()).create_bucket(Bucket=bucket)

    @staticmethod
    def _credentials() -> dict[str, str]:
        return {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}

    @property
    def storage(self) -> str:
        return f"s3://{self.bucket}/"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self._process.wait(timeout=30)
        self._log.close()
