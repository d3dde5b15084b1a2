"""Files of the lake outside Delta (the stream's checkpoint) read without Spark: on the local disk or on S3 (any
S3-compatible endpoint), through pyarrow's file systems and the lake's settings."""

from __future__ import annotations

import os

from pyarrow import fs

from lakehouse.settings import Settings

# S3-compatible stores refuse the flexible checksums the AWS SDKs send by default since 2025: S3Proxy answers
# GetObject's `x-amz-checksum-mode: enabled` with HTTP 501, and uploads in aws-chunked encoding with a trailing CRC
# with HTTP 400 (XAmzContentSHA256Mismatch). Against a custom endpoint the SDK's own switches ask for checksums only
# where the S3 API requires them, as before 2025; a value set in the environment wins. Read when a client is made.
_CHECKSUMS_WHEN_REQUIRED = {
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}


def filesystem(location: str, settings: Settings) -> tuple[fs.FileSystem, str]:
    """The file system that holds `location` (a local path, or s3a:// / s3:// URI), and the path on it."""
    if not location.startswith(("s3a://", "s3://")):
        return fs.LocalFileSystem(), location
    endpoint = settings.s3_endpoint
    if endpoint:
        for name, value in _CHECKSUMS_WHEN_REQUIRED.items():
            os.environ.setdefault(name, value)
    s3 = fs.S3FileSystem(
        access_key=settings.s3_access_key or None,
        secret_key=settings.s3_secret_key or None,
        region=settings.s3_region,
        endpoint_override=endpoint.split("://", 1)[-1] if endpoint else None,
        scheme="http" if endpoint.startswith("http:") else "https",
        force_virtual_addressing=not settings.s3_path_style and not endpoint,
    )
    return s3, location.split("://", 1)[1]


def exists(location: str, settings: Settings) -> bool:
    store, path = filesystem(location, settings)
    return store.get_file_info(path).type != fs.FileType.NotFound
