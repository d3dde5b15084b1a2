"""S3Proxy: a real S3 API server, run from the Maven jars, keeping its objects in memory.

The loopback stand-in for S3 (or any S3-compatible store) under an s3a:// lake: Spark talks to it through hadoop-aws
exactly as it would to S3, with a path-style endpoint and a key pair. Its in-memory store ("transient") is the one
with S3's own semantics for the "folder/" marker objects s3a writes: the folder-backed stores here either lose them
(`filesystem`: the stream's checkpoint could not be created) or show a folder as a file (`filesystem-nio2`: Delta's
`_delta_log/_staged_commits` "is a file"). So the lake lives as long as S3Proxy runs. Config, log and pid file live
under `<home>/s3proxy`.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from lakehouse.services import process
from lakehouse.services.base import Service


@dataclass(frozen=True)
class S3Proxy(Service):
    name = "S3Proxy"
    file_stem = "s3proxy"

    home: Path
    port: int
    jars_dir: Path
    buckets: tuple[str, ...]
    access_key: str = "marketlake"
    secret_key: str = ""  # "": a random one, kept in <home>/secret_key
    heap: str = "1g"  # the objects live in it

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def secret(self) -> str:
        """The secret key clients use: the configured one, else the one generated on the first start."""
        if self.secret_key:
            return self.secret_key
        path = self.home / "secret_key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def properties(self) -> str:
        return "\n".join(
            [
                f"s3proxy.endpoint={self.endpoint}",
                "s3proxy.authorization=aws-v2-or-v4",
                f"s3proxy.identity={self.access_key}",
                f"s3proxy.credential={self.secret}",
                "jclouds.provider=transient",
                "",
            ]
        )

    def prepare(self) -> None:
        # Without a configuration of its own, S3Proxy's logback logs every request at DEBUG.
        (self.home / "logback.xml").write_text(
            '<configuration><appender name="out" class="ch.qos.logback.core.ConsoleAppender"><encoder>'
            "<pattern>%d %level %logger{20} - %msg%n</pattern></encoder></appender>"
            '<root level="WARN"><appender-ref ref="out"/></root></configuration>\n'
        )
        config = self.home / "s3proxy.properties"
        config.touch(mode=0o600)  # it holds the secret key
        config.write_text(self.properties())

    def start(self, timeout_s: float | None = None) -> dict[str, float]:
        """Start it, then create its buckets (an in-memory store starts empty)."""
        steps = super().start(timeout_s)
        from pyarrow import fs

        store = fs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret,
            endpoint_override=f"{self.host}:{self.port}",
            scheme="http",
            allow_bucket_creation=True,
        )
        for bucket in self.buckets:
            if store.get_file_info(bucket).type == fs.FileType.NotFound:
                store.create_dir(bucket)
        return steps

    def command(self) -> list[str]:
        if not any(self.jars_dir.glob("s3proxy-*.jar")):
            raise process.ServiceError(f"S3Proxy jars not found in {self.jars_dir}; resolve them with `make jars`.")
        java = shutil.which("java")
        if java is None:
            raise process.ServiceError("java not found on PATH; S3Proxy needs a JDK 17+.")
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Dlogback.configurationFile={self.home / 'logback.xml'}",
            "-cp",
            f"{self.jars_dir}/*",
            "org.gaul.s3proxy.Main",
            "--properties",
            str(self.home / "s3proxy.properties"),
        ]
