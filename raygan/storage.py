"""Storage URIs: local folders and anything pyarrow opens (s3://, gs://), one code path for both.

    check_writable("s3://bucket/prefix")          # preflight: UserError naming the URI and the cause
    check_name(args.name, "--name")               # a run or experiment: one folder under the root, or UserError
    write_bytes(join(root, ".raygan_cache", "x.pt"), data)
    data = read_bytes(join(root, ".raygan_cache", "x.pt"))   # None when missing

S3-compatible servers (MinIO, Ceph, moto) come through the standard AWS environment:
AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
AWS_PROFILE. Nothing here names a provider; credentials never pass through raygan's config.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from pathlib import Path

import pyarrow.fs

from raygan.errors import RunFailure, UserError, first_line

SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
PREFLIGHT_TIMEOUT_S = 5
# S3 calls by long-running work (Ray's controller, checkpoint uploads) retry with backoff for about
# 5 minutes, so a storage outage delays a run instead of failing it; commands give up after ~2 s.
PATIENT_S3_ATTEMPTS, QUICK_S3_ATTEMPTS = 20, 3


def is_uri(path: str) -> bool:
    return "://" in path


def expand(path: str) -> str:
    """A URI unchanged; a local path with `~` expanded (relative paths stay relative, as typed)."""
    return path if is_uri(path) else str(Path(path).expanduser())


def join(root: str, *parts: str) -> str:
    """`root/part/...` for a folder or a URI; the one way raygan builds a path under a storage root."""
    return "/".join([root.rstrip("/"), *parts])


# What a name may not hold: separators, and the characters that end or encode a URI's path (pyarrow reads
# `s3://b/runs/x?endpoint_override=...` as options, `#` as a fragment, `%2F` as a slash)
NAME_FORBIDDEN = "/\\?#%"


def check_name(name: str, what: str = "name") -> str:
    """`name` (a run's or an experiment's) if it is one folder directly under the storage root, the same
    folder on every storage; else UserError `<what>: ...`. Callers check before Ray starts or anything is written."""
    bad = sorted({c for c in name if c in NAME_FORBIDDEN or not c.isprintable()})
    if not name:
        reason = "not empty"
    elif name in (".", ".."):
        reason = "not '.' or '..'"
    elif bad:
        reason = f"without {' '.join(NAME_FORBIDDEN)} or control characters; it holds {', '.join(map(repr, bad))}"
    else:
        return name
    raise UserError(f"{what}: {name!r} must be a single path component (one folder under the storage root), {reason}")


def parent(uri: str) -> str:
    """The folder or prefix that holds `uri` (`s3://b/runs/r1/checkpoint_0000100` -> `s3://b/runs/r1`)."""
    return uri.rstrip("/").rsplit("/", 1)[0]


def basename(uri: str) -> str:
    """The last part of a folder or URI (`s3://b/runs/r1/` -> `r1`)."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def check_uri(uri: str) -> None:
    """Malformed storage URIs are bad input: `s3:/bucket`, `s3://`, `s3://Bad_Bucket`, `ftp://...`."""
    scheme = SCHEME.match(uri)
    if scheme and not is_uri(uri) and len(scheme.group(1)) > 1:  # one letter: a Windows drive
        raise UserError(f"{uri}: malformed URI (expected {scheme.group(1)}://bucket/prefix)")
    if not is_uri(uri):
        return
    if uri.startswith("s3://"):
        bucket = uri[len("s3://") :].split("/", 1)[0]
        if not bucket:
            raise UserError(f"{uri}: no bucket name (expected s3://bucket/prefix)")
        if not BUCKET.match(bucket):
            raise UserError(f"{uri}: {bucket!r} is not a valid S3 bucket name")
        return
    try:
        pyarrow.fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as e:
        raise UserError(f"{uri}: unsupported storage URI ({first_line(e)})") from None


def root(path: str) -> str:
    """A storage root as Ray wants it, checked: URIs without a trailing slash, local folders absolute."""
    check_uri(path)
    return path.rstrip("/") if is_uri(path) else str(Path(path).expanduser().resolve())


def check_writable(uri: str) -> None:
    """Preflight before Ray starts: the URI is well formed and, for object stores, a marker object
    can be written and deleted with the credentials in the environment. Local folders are created on
    first write, so nothing is created here."""
    check_uri(uri)
    if uri.startswith("s3://"):
        _check_s3(uri)
    elif is_uri(uri):
        _check_pyarrow(uri)


def _check_s3(uri: str) -> None:
    import boto3
    import botocore.config
    import botocore.exceptions as errors

    bucket, _, prefix = uri[len("s3://") :].partition("/")
    key = join(prefix.strip("/"), f".raygan-preflight-{uuid.uuid4().hex}").lstrip("/")
    config = botocore.config.Config(
        connect_timeout=PREFLIGHT_TIMEOUT_S, read_timeout=PREFLIGHT_TIMEOUT_S, retries={"max_attempts": 1}
    )
    try:
        client = boto3.session.Session().client("s3", config=config)
        client.put_object(Bucket=bucket, Key=key, Body=b"")
        client.delete_object(Bucket=bucket, Key=key)
    except errors.ProfileNotFound as e:
        raise UserError(f"{uri}: {e}") from None
    except errors.NoCredentialsError:
        raise UserError(
            f"{uri}: no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        ) from None
    except (errors.EndpointConnectionError, errors.ConnectTimeoutError, errors.ReadTimeoutError) as e:
        raise UserError(f"{uri}: cannot reach the S3 endpoint ({e})") from None
    except errors.ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            raise UserError(f"{uri}: bucket {bucket!r} does not exist") from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "ExpiredToken"):
            raise UserError(f"{uri}: the S3 credentials were rejected ({code})") from None
        if code in ("AccessDenied", "AllAccessDisabled", "403"):
            raise UserError(f"{uri}: these credentials may not write to the bucket ({code})") from None
        raise UserError(f"{uri}: S3 refused a test write ({code or e})") from None
    except errors.BotoCoreError as e:
        raise UserError(f"{uri}: {e}") from None


def _check_pyarrow(uri: str) -> None:
    fs, path = filesystem(uri)
    marker = join(path, f".raygan-preflight-{uuid.uuid4().hex}")
    try:
        with fs.open_output_stream(marker) as stream:
            stream.write(b"")
        fs.delete_file(marker)
    except OSError as e:
        raise UserError(f"{uri}: cannot write there ({first_line(e)})") from None


def filesystem(uri: str, patient: bool = False) -> tuple[pyarrow.fs.FileSystem, str]:
    """(filesystem, path inside it); local paths are made absolute. `patient`: S3 retries ~5 minutes."""
    if uri.startswith("s3://") and "?" not in uri:  # with ?options, pyarrow's own URI parsing decides
        path = uri[len("s3://") :].rstrip("/")
        return _s3(path.split("/", 1)[0], patient), path
    if is_uri(uri):
        return pyarrow.fs.FileSystem.from_uri(uri)
    return pyarrow.fs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


class EnvironmentS3(pyarrow.fs.S3FileSystem):
    """pyarrow's S3 that pickles as "rebuild from the environment where you land": Ray ships the
    filesystem to its controller and Tune stores it in tuner.pkl, and a plain S3FileSystem would carry
    the credentials along (and drop the retry budget)."""

    def __init__(self, bucket: str, patient: bool, **options):
        super().__init__(**options)
        self._args = (bucket, patient)

    def __reduce__(self):
        return _s3, self._args


def _s3(bucket: str, patient: bool) -> pyarrow.fs.S3FileSystem:
    """S3 from the standard AWS environment (endpoint, credentials, region) with a retry budget."""
    attempts = PATIENT_S3_ATTEMPTS if patient else QUICK_S3_ATTEMPTS
    options = {"retry_strategy": pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=attempts)}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:  # an S3-compatible server (MinIO, Ceph, moto); the constructor does not read this itself
        scheme, _, address = endpoint.rpartition("://")
        options.update(endpoint_override=address.rstrip("/"), scheme=scheme or "https")
    if region:
        options["region"] = region
    elif not endpoint:
        try:  # AWS itself: ask where the bucket lives, as pyarrow's from_uri does
            options["region"] = pyarrow.fs.resolve_s3_region(bucket)
        except OSError:
            pass
    return EnvironmentS3(bucket, patient, **options)


def uri_of(fs: pyarrow.fs.FileSystem, path: str) -> str:
    """The URI of `path` inside `fs` (Ray hands out checkpoint paths without their scheme)."""
    if isinstance(fs, pyarrow.fs.LocalFileSystem) or is_uri(path):
        return path
    scheme = {"gcs": "gs"}.get(fs.type_name, fs.type_name)
    return f"{scheme}://{path}"


def is_file(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type == pyarrow.fs.FileType.File


def read_bytes(uri: str) -> bytes | None:
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Readers never see a partial file: a local file is renamed into place, an object store put is atomic."""
    fs, path = filesystem(uri)
    write_file(fs, path, data)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class StorageFull(RunFailure):
    """A write failed for want of space (ENOSPC, EDQUOT). Not an OSError on purpose: the handlers that wait out
    an outage (`except OSError`) must not catch it. A full disk does not empty itself the way a network comes
    back: waiting would hold the run's workers idle for nothing, so whoever meets it stops the run at once."""

    def __init__(self, path: str, reason: str = "no space left on device"):
        super().__init__(f"{path}: {reason}")
        self.path = path


def no_space(error: BaseException) -> str | None:
    """What is full when `error` says the storage is (`no space left on device`, `disk quota exceeded`), else
    None. pyarrow raises OSError with the errno where the OS gave one; its message keeps the text either way."""
    if not isinstance(error, OSError):
        return None
    for code in NO_SPACE:
        if error.errno == code or os.strerror(code) in str(error):
            return os.strerror(code).lower()
    return None


@contextlib.contextmanager
def full_disk_names(path: str):
    """Within it, an OSError for want of space becomes StorageFull naming `path`; any other passes as it is."""
    try:
        yield
    except OSError as e:
        if reason := no_space(e):
            raise StorageFull(path, reason) from None
        raise


def write_file(fs: pyarrow.fs.FileSystem, path: str, data: bytes) -> None:
    """`data` to `path` in `fs`, whole or not at all; a full disk raises StorageFull naming `path`."""
    with full_disk_names(path):
        _write_file(fs, path, data)


def _write_file(fs: pyarrow.fs.FileSystem, path: str, data: bytes) -> None:
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            with fs.open_output_stream(temporary) as stream:
                stream.write(data)
            os.replace(temporary, path)
        except BaseException:  # a write cut short (a full disk) leaves no part-file taking the space
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise
    else:
        with fs.open_output_stream(path) as stream:
            stream.write(data)


def list_dir(uri: str) -> list[str]:
    """Names of the entries directly under a folder or prefix (empty when it does not exist)."""
    return sorted(sizes(uri, files_only=False))


def sizes(uri: str, files_only: bool = True) -> dict[str, int]:
    """{name: size in bytes} of the entries directly under a folder or prefix (folders: -1)."""
    fs, path = filesystem(uri)
    selector = pyarrow.fs.FileSelector(path, allow_not_found=True)
    out = {}
    for info in fs.get_file_info(selector):
        if info.type == pyarrow.fs.FileType.File:
            out[info.base_name] = info.size
        elif not files_only:
            out[info.base_name] = -1
    return out
