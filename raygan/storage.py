"""Storage URIs: local folders and anything pyarrow opens (s3://, gs://), one code path for both.

    write_bytes(join(root, ".raygan_cache", "x.pt"), data)
    data = read_bytes(join(root, ".raygan_cache", "x.pt"))   # None when missing
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Optional

import pyarrow.fs


def is_uri(path: str) -> bool:
    return "://" in path


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """(filesystem, path inside it); local paths are made absolute."""
    if is_uri(uri):
        return pyarrow.fs.FileSystem.from_uri(uri)
    return pyarrow.fs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def read_bytes(uri: str) -> Optional[bytes]:
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Readers never see a partial file: a local file is renamed into place, an object store put is atomic."""
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        with fs.open_output_stream(temporary) as stream:
            stream.write(data)
        os.replace(temporary, path)
    else:
        with fs.open_output_stream(path) as stream:
            stream.write(data)


def list_dir(uri: str) -> list[str]:
    """Names of the entries directly under a folder or prefix (empty when it does not exist)."""
    fs, path = filesystem(uri)
    selector = pyarrow.fs.FileSelector(path, allow_not_found=True)
    return sorted(info.base_name for info in fs.get_file_info(selector))

