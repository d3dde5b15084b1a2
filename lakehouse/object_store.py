"""Files of the lake outside Delta (the stream's checkpoint) read without Spark: on the local disk or on S3 (any
S3-compatible endpoint), through pyarrow's file systems and the lake's settings."""

from __future__ import annotations

from pyarrow import fs

from lakehouse.settings import Settings


def filesystem(location: str, settings: Settings) -> tuple[fs.FileSystem, str]:
    """The file system that holds `location` (a local path, or s3a:// / s3:// URI), and the path on it."""
    if not location.startswith(("s3a://", "s3://")):
        return fs.LocalFileSystem(), location
    endpoint = settings.s3_endpoint
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
