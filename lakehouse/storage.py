"""Where the tables live, a local folder or an S3 prefix, and how each engine reaches it.

``SHELFLIFE_LAKEHOUSE`` (or ``--lakehouse``) is either a folder or ``s3://bucket/prefix``.
The S3 settings are the usual AWS ones, read from the environment or a profile:
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for a non-AWS endpoint such as a local
S3 server, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, and credentials from
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``) or
``AWS_PROFILE``. boto3 resolves them once (:func:`s3_settings`), and each engine gets them
in its own words: delta-rs as storage options (:func:`delta_options`), Spark as ``s3a``
settings (:func:`spark_s3_conf`), and the landing zone through boto3 itself.

Who commits where, on S3: delta-rs 1.x commits a Delta version with a conditional PUT
(``If-None-Match: *``), so any number of delta-rs writers can share a table and a losing
writer retries on the next version; Spark's Delta writer on S3 assumes it is the table's
only writer. Every table but one is committed by delta-rs; the forecast table is written
by Spark alone (``lakehouse.catalogue`` names the engine of each).

A machine's own working state (the stream's checkpoints and spills, ingest's seq
database, the operators file) is not table data and never goes to S3: it lives under
the lakehouse folder when the lakehouse is local, and under ``SHELFLIFE_STATE_DIR``
(default ``./shelflife-state``) when it is on S3 (:func:`state_dir`).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

ENV_ROOT = "SHELFLIFE_LAKEHOUSE"
ENV_STATE = "SHELFLIFE_STATE_DIR"
DEFAULT_REGION = "us-east-1"
HADOOP_AWS_PACKAGE = os.environ.get("SHELFLIFE_HADOOP_AWS_PACKAGE",
                                    "org.apache.hadoop:hadoop-aws:3.5.0")
"""hadoop-aws matching the Hadoop (3.5.0) that pyspark 4.2 ships; it brings the AWS SDK
bundle it was built against from Maven Central."""


class StorageError(RuntimeError):
    """The lakehouse's storage cannot be reached as configured; the message says why."""


def is_s3(url: str | os.PathLike[str]) -> bool:
    return str(url).startswith(("s3://", "s3a://"))


def lake_url(root: str | os.PathLike[str] | None = None) -> str:
    """The tables' location: ``s3://bucket/prefix`` or an absolute folder.

    An explicit root wins, then ``$SHELFLIFE_LAKEHOUSE``, then ``./lakehouse``."""
    text = str(root or os.environ.get(ENV_ROOT) or "lakehouse")
    if is_s3(text):
        parsed = urlparse(text)
        if not parsed.netloc:
            raise StorageError(f"lakehouse {text!r}: expected s3://bucket/prefix")
        prefix = parsed.path.strip("/")
        return f"s3://{parsed.netloc}" + (f"/{prefix}" if prefix else "")
    return str(Path(text).resolve())


def join(url: str, *parts: str) -> str:
    """``url/part/part`` for a folder or an S3 prefix alike."""
    if is_s3(url):
        return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(url, *parts))


def split_s3(url: str) -> tuple[str, str]:
    """(bucket, key prefix without slashes) of an S3 URL."""
    parsed = urlparse(url)
    return parsed.netloc, parsed.path.strip("/")


def spark_url(url: str) -> str:
    """The URL Spark's Hadoop file systems open: ``s3a://`` for S3, a folder as is."""
    return "s3a://" + url[len("s3://"):] if url.startswith("s3://") else url


def state_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """This machine's working-state folder for the lakehouse at ``root``.

    For a local lakehouse it is the lakehouse folder (checkpoints sit beside the tables,
    as they always have); for an S3 lakehouse it is ``$SHELFLIFE_STATE_DIR`` or
    ``./shelflife-state``, one sub-folder per bucket and prefix so two lakehouses never
    share a checkpoint."""
    url = lake_url(root)
    if not is_s3(url):
        return Path(url)
    bucket, prefix = split_s3(url)
    base = Path(os.environ.get(ENV_STATE) or "shelflife-state").resolve()
    return base.joinpath(bucket, *(p for p in prefix.split("/") if p))


@dataclass(frozen=True)
class S3Settings:
    """The resolved AWS settings every engine is given."""

    region: str
    endpoint: str | None
    access_key: str
    secret_key: str
    session_token: str | None

    @property
    def allow_http(self) -> bool:
        return bool(self.endpoint and self.endpoint.startswith("http://"))


def _boto3() -> Any:
    """boto3, imported only where S3 is used: the store agent's CLI imports this module
    and has no boto3."""
    try:
        import boto3  # the server extra; see the docstring
    except ImportError as exc:  # pragma: no cover - the server extra has it
        raise StorageError("an s3:// lakehouse needs boto3 (pip install 'shelflife[server]')"
                           ) from exc
    return boto3


@functools.cache
def s3_settings() -> S3Settings:
    """Resolve region, endpoint and credentials once, the way the AWS CLI does."""
    session = _boto3().Session()
    creds = session.get_credentials()
    if creds is None:
        raise StorageError(
            "no AWS credentials for the s3:// lakehouse: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile in ~/.aws/credentials")
    frozen = creds.get_frozen_credentials()
    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                or None)
    region = session.region_name or DEFAULT_REGION
    return S3Settings(region, endpoint, frozen.access_key, frozen.secret_key, frozen.token)


S3_CONNECTIONS = 32
"""Connections a client keeps to S3: the stream GETs up to 16 landing batches at once
beside the backlog scans and ingest's PUTs (botocore's default of 10 dropped and reopened
connections under that load)."""


def s3_client() -> Any:  # a botocore client; boto3 stays an optional import
    """The process's boto3 S3 client for the lakehouse's settings.

    One client is shared (botocore clients are thread-safe): building one loads the
    service model and took several milliseconds of CPU, once per landing read."""
    return _client_for(s3_settings())


@functools.lru_cache(maxsize=4)
def _client_for(s: S3Settings) -> Any:
    from botocore.config import Config  # comes with boto3, imported only for S3 too

    return _boto3().client("s3", region_name=s.region, endpoint_url=s.endpoint,
                           aws_access_key_id=s.access_key, aws_secret_access_key=s.secret_key,
                           aws_session_token=s.session_token,
                           config=Config(max_pool_connections=S3_CONNECTIONS))


def delta_options(url: str | os.PathLike[str]) -> dict[str, str]:
    """delta-rs storage options for a table at ``url`` (none for a local folder)."""
    if not is_s3(url):
        return {}
    s = s3_settings()
    options = {"AWS_REGION": s.region, "AWS_ACCESS_KEY_ID": s.access_key,
               "AWS_SECRET_ACCESS_KEY": s.secret_key}
    if s.session_token:
        options["AWS_SESSION_TOKEN"] = s.session_token
    if s.endpoint:
        options["AWS_ENDPOINT_URL"] = s.endpoint
        # A local or on-premises S3 serves buckets by path, not by host name.
        options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
    if s.allow_http:
        options["AWS_ALLOW_HTTP"] = "true"
    return options


def spark_s3_conf() -> dict[str, str]:
    """Spark settings that let ``s3a://`` reach the lakehouse's bucket."""
    s = s3_settings()
    conf = {
        "spark.hadoop.fs.s3a.access.key": s.access_key,
        "spark.hadoop.fs.s3a.secret.key": s.secret_key,
        "spark.hadoop.fs.s3a.endpoint.region": s.region,
        "spark.hadoop.fs.s3a.aws.credentials.provider":
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        # Spark's Delta writer on S3 is a single-driver writer: only the forecast job
        # commits with it, to the one table no other engine commits to.
        "spark.delta.logStore.s3a.impl": "io.delta.storage.S3SingleDriverLogStore",
        "spark.hadoop.fs.s3a.connection.maximum": "64",
        # Upload blocks are buffered in memory, not in local temp files: Shelflife's Spark
        # maps file:// to Hadoop's raw local file system (spark_jobs.spark), which s3a's
        # disk buffer cannot use, and the files Spark writes here are small.
        "spark.hadoop.fs.s3a.fast.upload.buffer": "bytebuffer",
        # Landing batches and Delta files are read start to end: one GET per file.
        "spark.hadoop.fs.s3a.input.fadvise": "sequential",
    }
    if s.session_token:
        conf["spark.hadoop.fs.s3a.session.token"] = s.session_token
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
            "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider")
    if s.endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = s.endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(
            not s.allow_http).lower()
    return conf


def check_bucket(url: str, *, create: bool = False) -> None:
    """Make sure the bucket of an ``s3://`` lakehouse is there and ours to write.

    Raises :class:`StorageError` naming what is wrong (no credentials, no bucket, no
    access, no endpoint) instead of a stack trace from three layers down. ``create``
    makes a missing bucket (what ``shelflife demo`` and the tests want; a production
    bucket is made by whoever owns the account)."""
    if not is_s3(url):
        return
    bucket, _ = split_s3(url)
    client = s3_client()
    errors = sys.modules["botocore.exceptions"]  # loaded with boto3 by s3_client
    BotoCoreError, ClientError = errors.BotoCoreError, errors.ClientError
    EndpointConnectionError = errors.EndpointConnectionError
    where = s3_settings().endpoint or f"AWS {s3_settings().region}"
    try:
        client.head_bucket(Bucket=bucket)
        return
    except EndpointConnectionError as exc:
        raise StorageError(f"cannot reach S3 at {where}: {exc}") from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise StorageError(f"bucket {bucket!r} at {where}: access denied with these "
                               f"credentials ({code})") from None
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"bucket {bucket!r} at {where}: {exc}") from None
    except BotoCoreError as exc:
        raise StorageError(f"bucket {bucket!r} at {where}: {exc}") from None
    if not create:
        raise StorageError(f"bucket {bucket!r} does not exist at {where}: create it first "
                           f"(aws s3 mb s3://{bucket}); `shelflife demo` makes its own")
    region = s3_settings().region
    extra = ({} if region == DEFAULT_REGION
             else {"CreateBucketConfiguration": {"LocationConstraint": region}})
    client.create_bucket(Bucket=bucket, **extra)
    log.info("created bucket %s at %s", bucket, where)


def ensure_folder(url: str) -> None:
    """Make a local folder, or an S3 prefix's folder marker (``prefix/``, an empty object),
    so that a zone shows in a listing (and in S3 consoles) before its first object."""
    if not is_s3(url):
        Path(url).mkdir(parents=True, exist_ok=True)
        return
    bucket, prefix = split_s3(url)
    s3_client().put_object(Bucket=bucket, Key=f"{prefix}/", Body=b"")


def ensure_parent(url: str) -> None:
    """Make a local table's parent folder (S3 has no folders to make)."""
    if not is_s3(url):
        Path(url).parent.mkdir(parents=True, exist_ok=True)
