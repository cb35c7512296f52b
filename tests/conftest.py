"""Shared fixtures: a real moto S3 server over HTTP on loopback, Airflow connections pointing at it."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Airflow reads its configuration at import time: give the test run its own home (removed when the run ends)
# and no examples.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="kraken-airflow-home-")
    atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# Airflow 2.11 deprecates timers in seconds (3.x measures in milliseconds): opt in, as a 2.11 deployment should.
os.environ.setdefault("AIRFLOW__METRICS__TIMER_UNIT_CONSISTENCY", "True")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parents[1] / "example_dags"))

import boto3
from botocore.config import Config
from hypothesis import HealthCheck, settings

from airflow_provider_kraken_s3.transfer.access import S3Access
from kraken_standins.airflow_cli import migrate_airflow_db
from kraken_standins.s3 import MotoServer
from tests.faults import FaultProxy

_MIB = 1024**2

pytest_plugins = ["tests.conftest_mongo"]

# Property tests check what holds for every input, not how fast: on a loaded machine (CI runs both Airflow
# lines on two cores) one example may take half a second, which is no failure. No deadline, anywhere, and no
# complaint that generating examples was slow.
settings.register_profile("kraken", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kraken")
# The fast loop (-m "not slow") tries fewer examples per property; the full run, and CI, keep Hypothesis's 100.
settings.register_profile("kraken-quick", parent=settings.get_profile("kraken"), max_examples=20)


def pytest_configure(config: pytest.Config) -> None:
    if "not slow" in (config.option.markexpr or "") and not config.getoption("hypothesis_profile", None):
        settings.load_profile("kraken-quick")


def _cheaper_aws_clients() -> None:
    """Make the Amazon provider's clients cheaper to create in this process; what they do is unchanged.

    Every ``AwsBaseHook`` connection builds a new boto3 session, and with it a new botocore loader that parses
    the S3 model and the endpoint rules from JSON again, then walks the call stack with ``inspect.stack()``
    (which reads source lines and maps every frame to its module) to name the calling operator in the
    User-Agent. Under pytest's deep stacks that was over half the time of a typical operator test. Here the
    loader (static data, cached per data path) is shared between sessions, and the caller is found by
    walking the frames: the same name, without the source lines.
    """
    import botocore.loaders
    import botocore.session
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    loaders: dict[object, botocore.loaders.Loader] = {}

    def shared_loader(session: botocore.session.Session) -> botocore.loaders.Loader:
        data_path = session.get_config_variable("data_path")
        if data_path not in loaders:
            loaders[data_path] = botocore.loaders.create_loader(data_path)
        return loaders[data_path]

    def register_data_loader(self: botocore.session.Session) -> None:
        self._components.lazy_register_component("data_loader", lambda: shared_loader(self))

    def find_operator_class_name(target_function_name: str) -> str | None:
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_name != target_function_name:
            frame = frame.f_back
        return None if frame is None else type(frame.f_locals["self"]).__name__

    botocore.session.Session._register_data_loader = register_data_loader  # type: ignore[method-assign]
    if hasattr(AwsBaseHook, "_find_operator_class_name"):
        AwsBaseHook._find_operator_class_name = staticmethod(find_operator_class_name)  # type: ignore[method-assign]


_cheaper_aws_clients()


def aws_connection_json(endpoint_url: str, **config_kwargs: object) -> str:
    """An ``aws`` Airflow connection (JSON form, valid on 2.11 and 3.x) for an S3-compatible endpoint."""
    extra: dict[str, object] = {"endpoint_url": endpoint_url, "region_name": "us-east-1"}
    if config_kwargs:
        extra["config_kwargs"] = config_kwargs
    return json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra})


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer.start() as server:
        yield server


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated metadata database in the test run's AIRFLOW_HOME, for ``airflow dags test``."""
    migrate_airflow_db()


@pytest.fixture
def aws_conn(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """``aws_default`` pointing at the moto server, through Airflow's connection machinery."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json(moto_server.url))
    return "aws_default"


@pytest.fixture(scope="session")
def s3_client(moto_server: MotoServer):
    """A plain boto3 client straight to the moto server, for arranging and checking (one for the run: a
    client keeps no state between calls, and creating one per test had been 4 % of the fast loop's CPU)."""
    return client_for(moto_server.url)


@pytest.fixture
def bucket(s3_client) -> str:
    name = f"kraken-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


#: The bucket of :func:`project_bucket`: alphakraken's name for project P1234 under the prefix "kraken-lab".
PROJECT_BUCKET = "kraken-lab-p1234"


@pytest.fixture
def project_bucket(s3_client) -> Iterator[str]:
    """Project P1234's bucket (``kraken-lab-p1234``), emptied of every version and upload afterwards."""
    s3_client.create_bucket(Bucket=PROJECT_BUCKET)
    yield PROJECT_BUCKET
    for version in s3_client.list_object_versions(Bucket=PROJECT_BUCKET).get("Versions", []):
        s3_client.delete_object(Bucket=PROJECT_BUCKET, Key=version["Key"], VersionId=version["VersionId"])
    for marker in s3_client.list_object_versions(Bucket=PROJECT_BUCKET).get("DeleteMarkers", []):
        s3_client.delete_object(Bucket=PROJECT_BUCKET, Key=marker["Key"], VersionId=marker["VersionId"])
    for upload in s3_client.list_multipart_uploads(Bucket=PROJECT_BUCKET).get("Uploads", []):
        s3_client.abort_multipart_upload(
            Bucket=PROJECT_BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    s3_client.delete_bucket(Bucket=PROJECT_BUCKET)


@pytest.fixture
def make_file(tmp_path: Path):
    """Write a file of ``size`` pseudo-random bytes (deterministic per seed) and return its path."""

    def make(name: str, size: int, seed: int = 0) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(random_bytes(size, seed))
        return path

    return make


def random_bytes(size: int, seed: int | str = 0) -> bytes:
    """``size`` pseudo-random bytes, the same for the same seed: one MiB of random bytes from the seed, repeated,
    each MiB stamped with a digest of the seed and its index, so every MiB (and every part of an upload) differs.

    Eight times faster than ``randbytes`` of the whole size, which had been 6 % of the fast loop's CPU.
    """
    block = random.Random(seed).randbytes(min(size, _MIB))
    if size <= _MIB:
        return block
    data = bytearray(block * -(-size // _MIB))
    del data[size:]
    for index in range(0, size, _MIB):
        stamp = hashlib.md5(f"{seed!r}/{index}".encode()).digest()
        data[index : index + len(stamp)] = stamp[: size - index]
    return bytes(data)


def client_for(url: str, *, attempts: int = 3):
    """The tests' boto3 S3 client for ``url`` (moto, or a proxy in front of it): test credentials, botocore's
    standard retry mode, at most ``attempts`` attempts per call.

    ``total_max_attempts`` counts the first attempt too (botocore's ``max_attempts`` counts retries:
    ``max_attempts=1`` means two attempts), which is what tests that count requests at a proxy count.
    """
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )


def put_object(
    s3_client, bucket: str, key: str, data: bytes, *, part_size: int = 5 * 1024**2, **extra
) -> str:
    """Store ``data`` as S3 would from an uploader with ``part_size`` parts; returns S3's ETag."""
    if len(data) <= part_size:
        return s3_client.put_object(Bucket=bucket, Key=key, Body=data, **extra)["ETag"].strip('"')
    upload = s3_client.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
    parts = []
    for number, offset in enumerate(range(0, len(data), part_size), start=1):
        answer = s3_client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=data[offset : offset + part_size]
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    done = s3_client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    return done["ETag"].strip('"')


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the moto server, for tests that add faults or count requests."""
    faults = FaultProxy(moto_server.port)
    with faults.running():
        yield faults


@pytest.fixture
def access(proxy: FaultProxy) -> S3Access:
    """The provider's S3 entry point, talking to moto through ``proxy``."""
    return S3Access(client=client_for(proxy.url), conn_id="test")


@pytest.fixture
def task_log(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]):
    """Everything logged so far: Airflow 2 logs through ``logging``, Airflow 3 hooks through structlog."""
    caplog.set_level("INFO")

    def text() -> str:
        captured = capsys.readouterr()
        return caplog.text + captured.out + captured.err

    return text


@pytest.fixture
def stage(tmp_path: Path, kraken_mongo):
    """``stage(raw_file_id, {relative path: size}, *, with_etag=False, **fields)`` → the backup folder
    (``tmp_path/backup``) after :func:`tests.staging.stage_raw_file` (project P1234 unless ``fields`` say
    otherwise). ``with_etag`` adds alphakraken's precomputed ETag at 5 MiB parts to the inventory."""
    from tests.staging import stage_raw_file

    def make(raw_file_id: str, sizes: dict[str, int], *, with_etag: bool = False, **fields) -> Path:
        base = tmp_path / "backup"
        stage_raw_file(base, raw_file_id, sizes, etag_part_size=5 * 1024**2 if with_etag else None, **fields)
        return base

    return make


#: Bucket and part size of :func:`backed_up` (project P1234, bucket prefix "kraken-cli").
BACKED_UP_BUCKET = "kraken-cli-p1234"
BACKED_UP_PART = 5 * 1024**2


@pytest.fixture
def backed_up(aws_conn, s3_client, kraken_mongo, tmp_path: Path):
    """``backed_up(raw_file_id, {relative path: size})`` → the backup folder, after a real verified backup
    (RawFileS3BackupOperator → moto_server, RawFile in mongomock), for tests of what comes after a backup."""
    from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
    from tests.staging import stage_raw_file

    s3_client.create_bucket(Bucket=BACKED_UP_BUCKET)

    def make(raw_file_id: str, sizes: dict[str, int]) -> Path:
        base = tmp_path / "backup"
        stage_raw_file(base, raw_file_id, sizes, project_id="P1234")
        RawFileS3BackupOperator(
            task_id="upload_to_s3",
            raw_file_id=raw_file_id,
            bucket_prefix="kraken-cli",
            part_size=BACKED_UP_PART,
        ).execute(context={})
        return base

    yield make
    for item in s3_client.list_objects_v2(Bucket=BACKED_UP_BUCKET).get("Contents", []):
        s3_client.delete_object(Bucket=BACKED_UP_BUCKET, Key=item["Key"])
    s3_client.delete_bucket(Bucket=BACKED_UP_BUCKET)
