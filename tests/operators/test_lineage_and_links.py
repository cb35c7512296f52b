"""What a backup tells Airflow: lineage (hook-lineage collector, OpenLineage) and the "S3 backup" link.

Real backups against moto server and mongomock; the collector is Airflow's own class, put in place of the
global one (which is a no-op unless a lineage reader such as the OpenLineage provider is installed).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import re
import sqlite3
import sys
import urllib.request
from pathlib import Path

import pytest
from airflow import __version__ as airflow_version
from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperatorLink

import airflow_provider_kraken_s3
from airflow_provider_kraken_s3.links import S3BackupLink, backup_url
from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from kraken_standins.airflow_cli import airflow_dags_test
from tests.dag_runner import latest_run_id

PREFIX = "kraken-lin"
PROJECT = "P7"
BUCKET = "kraken-lin-p7"


@pytest.fixture
def project_bucket(s3_client) -> str:
    s3_client.create_bucket(Bucket=BUCKET)
    yield BUCKET
    for item in s3_client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3_client.delete_object(Bucket=BUCKET, Key=item["Key"])
    s3_client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def stage(stage):
    """The shared ``stage`` (tests/conftest.py), for this module's project."""
    return functools.partial(stage, project_id=PROJECT)


@pytest.fixture
def fresh_collector(monkeypatch: pytest.MonkeyPatch):
    """Install a new real hook-lineage collector (Airflow's class, as Airflow makes it when a lineage reader
    is registered) as the global one; return it with the compat layer the operator sees."""
    from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector
    from airflow.providers.common.compat.sdk import get_hook_lineage_collector as global_collector

    home = sys.modules[global_collector.__module__]  # airflow.sdk.lineage (3.x), airflow.lineage.hook (2.11)

    def install():
        real = home.HookLineageCollector()
        monkeypatch.setattr(home, "get_hook_lineage_collector", lambda: real)
        return get_hook_lineage_collector()

    return install


@pytest.fixture
def collector(fresh_collector):
    return fresh_collector()


def uris(infos) -> list[str]:
    return sorted(info.asset.uri for info in infos)


def backup(raw_file_id: str) -> RawFileS3BackupOperator:
    return RawFileS3BackupOperator(
        task_id="upload_to_s3", raw_file_id=raw_file_id, bucket_prefix=PREFIX, part_size=5 * 2**20
    )


def test_a_backup_reports_the_files_it_read_and_every_object_it_vouches_for(
    aws_conn, s3_client, project_bucket, stage, collector
) -> None:
    sizes = {"s.d/analysis.tdf": 3000, "s.d/analysis.tdf_bin": 6 * 2**20, "s.d/m/x.method": 10}
    base = stage("s.d", sizes)
    # Already in S3 and proven by the listing: an output of the task, but not read, so not an input.
    s3_client.put_object(Bucket=BUCKET, Key="s.d/m/x.method", Body=(base / "s.d/m/x.method").read_bytes())

    result = backup("s.d").execute(context={})

    assert result["files_skipped"] == 1 and "keys" not in result and "read_paths" not in result
    lineage = collector.collected_assets
    assert uris(lineage.inputs) == [f"file://{base}/s.d/analysis.tdf", f"file://{base}/s.d/analysis.tdf_bin"]
    assert uris(lineage.outputs) == [f"s3://{BUCKET}/{key}" for key in sorted(sizes)]


def test_a_rerun_reads_nothing_and_still_vouches_for_every_object(
    aws_conn, project_bucket, stage, fresh_collector
) -> None:
    base = stage("r.raw", {"r.raw": 4000})
    first = fresh_collector()
    backup("r.raw").execute(context={})
    assert uris(first.collected_assets.inputs) == [f"file://{base}/r.raw"]

    second = fresh_collector()
    backup("r.raw").execute(context={})  # S3 proves the object: the local file is not opened

    assert uris(second.collected_assets.inputs) == []
    assert uris(second.collected_assets.outputs) == [f"s3://{BUCKET}/r.raw"]


def test_a_failed_backup_reports_no_lineage(aws_conn, stage, collector) -> None:
    stage("f.raw", {"f.raw": 100})  # no bucket kraken-lin-p7: a permanent failure
    operator = backup("f.raw")
    with pytest.raises(AirflowFailException, match="does not exist"):
        operator.execute(context={})
    assert not collector.has_collected
    assert operator._outcome is None


def test_openlineage_facets_name_the_same_datasets(aws_conn, project_bucket, stage, collector) -> None:
    pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is not installed")
    base = stage("o.raw", {"o.raw": 500})
    operator = backup("o.raw")
    assert operator.get_openlineage_facets_on_complete(None).outputs == []  # nothing verified yet
    operator.execute(context={})
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", f"{base}/o.raw")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [(f"s3://{BUCKET}", "o.raw")]


# ------------------------------------------------------------------ the link


@pytest.mark.parametrize(
    ("endpoint", "key", "url"),
    [
        ("http://127.0.0.1:9000", "x.raw", "http://127.0.0.1:9000/b/x.raw"),
        ("https://ceph.lab.org/", "x.d/", "https://ceph.lab.org/b/?list-type=2&prefix=x.d%2F"),
        (
            "https://ceph.lab.org",
            "astral1/2024_02/a b.d/",
            "https://ceph.lab.org/b/?list-type=2&prefix=astral1%2F2024_02%2Fa%20b.d%2F",
        ),
        (
            "https://ceph.lab.org",
            "astral1/2024_02/a b#1.raw",
            "https://ceph.lab.org/b/astral1/2024_02/a%20b%231.raw",
        ),
    ],
)
def test_link_for_a_custom_endpoint_is_the_object_or_the_listing_of_the_set(
    endpoint: str, key: str, url: str
) -> None:
    assert backup_url(bucket="b", key=key, endpoint_url=endpoint, region="eu-central-1") == url


def test_the_link_of_a_set_opens_on_an_s3_compatible_store(moto_server, s3_client, bucket) -> None:
    """What the button opens, asked of the store as a browser would (anonymously; the objects are public
    here, as a store's policy may make them): the set's objects, and a single file's bytes."""
    keys = ["astral1/s 1.d/analysis.tdf", "astral1/s 1.d/sub/analysis.tdf_bin"]
    for key in [*keys, "astral1/s 10.d/other"]:
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"x", ACL="public-read")
    url = backup_url(bucket=bucket, key="astral1/s 1.d/", endpoint_url=moto_server.url, region=None)

    with urllib.request.urlopen(url, timeout=30) as answer:
        assert answer.status == 200
        listed = re.findall(r"<Key>([^<]*)</Key>", answer.read().decode())
    assert listed == keys

    single = backup_url(bucket=bucket, key=keys[0], endpoint_url=moto_server.url, region=None)
    with urllib.request.urlopen(single, timeout=30) as answer:
        assert answer.status == 200 and answer.read() == b"x"


@pytest.mark.parametrize(
    ("endpoint", "region", "key", "url"),
    [
        (
            None,
            "eu-central-1",
            "x.raw",
            "https://eu-central-1.console.aws.amazon.com/s3/object/b?region=eu-central-1&bucketType=general"
            "&prefix=x.raw",
        ),
        (
            "https://s3.eu-central-1.amazonaws.com",
            "eu-central-1",
            "x.d/",
            "https://eu-central-1.console.aws.amazon.com/s3/buckets/b?region=eu-central-1&bucketType=general"
            "&prefix=x.d/&showversions=false",
        ),
        (
            None,
            "cn-north-1",
            "x.raw",
            "https://console.amazonaws.cn/s3/object/b?region=cn-north-1&bucketType=general&prefix=x.raw",
        ),
        (None, None, "x.raw", "https://console.aws.amazon.com/s3/object/b?bucketType=general&prefix=x.raw"),
    ],
)
def test_link_for_aws_is_the_console_page_in_the_connections_region(
    endpoint: str | None, region: str | None, key: str, url: str
) -> None:
    assert backup_url(bucket="b", key=key, endpoint_url=endpoint, region=region) == url


def test_provider_info_lists_the_link_and_the_operator_offers_it() -> None:
    info = airflow_provider_kraken_s3.get_provider_info()
    assert info["extra-links"] == ["airflow_provider_kraken_s3.links.S3BackupLink"]
    assert issubclass(S3BackupLink, BaseOperatorLink) and S3BackupLink.name == "S3 backup"
    assert [type(link) for link in RawFileS3BackupOperator.operator_extra_links] == [S3BackupLink]


def _xcom(dag_id: str, task_id: str, key: str):
    """An XCom of the newest run, from the metadata database, as the UI's server reads it."""
    home = os.environ["AIRFLOW_HOME"]
    with contextlib.closing(sqlite3.connect(Path(home) / "airflow.db")) as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND run_id = ? AND key = ?",
            (dag_id, task_id, latest_run_id(home, dag_id), key),
        ).fetchone()
    return None if row is None else json.loads(row[0])


@pytest.mark.slow
def test_the_link_survives_the_run(
    tmp_path, airflow_db, aws_conn, moto_server, s3_client, kraken_mongo
) -> None:
    """A real DAG run: the URL is kept at run time and the link gives it back afterwards."""
    s3_client.create_bucket(Bucket="kraken-link-p8")
    instrument = tmp_path / "instrument"
    instrument.mkdir()
    (instrument / "l.raw").write_bytes(random.Random(3).randbytes(2000))
    conf = {
        "raw_file_id": "l.raw",
        "project_id": "P8",
        "instrument_id": "astral1",
        "instrument_dir": str(instrument),
        "backup_dir": str(tmp_path / "backup"),
        "bucket_prefix": "kraken-link",
        "part_size_mib": 5,
    }
    airflow_dags_test("acquisition_handler", conf)
    expected = f"{moto_server.url}/kraken-link-p8/l.raw"
    assert _xcom("acquisition_handler", "upload_to_s3", S3BackupLink.key) == expected
    if (
        int(airflow_version.split(".")[0]) >= 3
    ):  # the task runner asked the link when the task ended; the API server reads this
        assert _xcom("acquisition_handler", "upload_to_s3", S3BackupLink().xcom_key) == expected
    else:  # the webserver asks the link
        from airflow.models.taskinstancekey import TaskInstanceKey

        home = os.environ["AIRFLOW_HOME"]
        key = TaskInstanceKey(
            "acquisition_handler", "upload_to_s3", latest_run_id(home, "acquisition_handler")
        )
        assert S3BackupLink().get_link(backup("l.raw"), ti_key=key) == expected
