"""S3Proxy: a real S3 API server over a local folder (one sub-folder per bucket), run from the Maven jars.

The loopback stand-in for S3 (or any S3-compatible store) under an s3a:// lake: Spark talks to it through hadoop-aws
exactly as it would to S3, with a path-style endpoint and a key pair. Config, data, log and pid file live under
`<home>/s3proxy`.
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
    heap: str = "256m"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

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
                # The filesystem blob store that keeps S3's semantics for "folder/" marker objects (s3a makes them).
                "jclouds.provider=filesystem-nio2",
                f"jclouds.identity={self.access_key}",  # the blob store's own (unused) account; required
                f"jclouds.credential={self.secret}",
                f"jclouds.filesystem.basedir={self.data_dir}",
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
        for bucket in self.buckets:  # the filesystem blob store's buckets are its folders
            (self.data_dir / bucket).mkdir(parents=True, exist_ok=True)

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
