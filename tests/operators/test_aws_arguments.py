"""The operators on the Amazon provider's ``AwsBaseOperator``: ``aws_conn_id``, ``region_name``, ``verify`` and
``botocore_config`` work as on every Amazon operator, and reach the S3 client that does the work.

Each test runs a real operator against moto_server through the fault proxy, which records every request's
headers: the ``User-Agent`` shows the ``user_agent_extra`` of ``botocore_config``, the SigV4 credential scope
of ``Authorization`` shows the region the client signs for. Run on both Airflow lines (the provider's base
classes must exist and behave alike in the Amazon provider each line pins).
"""

from __future__ import annotations

import pytest
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator

from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.operators.audit import S3BackupAuditOperator, S3BackupReconcileOperator
from airflow_provider_kraken_s3.operators.deep_verify import S3BackupDeepVerifyOperator
from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from airflow_provider_kraken_s3.operators.restore import RawFileS3RestoreOperator
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from tests.conftest import BACKED_UP_BUCKET, aws_connection_json
from tests.faults import FaultProxy, RequestRecord
from tests.operators.test_raw_file_backup import PART, PREFIX, operator

MARK = "kraken-faces-test/1"  # our user_agent_extra: seen in every request's User-Agent header


@pytest.fixture
def via_proxy(proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> str:
    """``aws_via_proxy``: an aws connection to moto through ``proxy`` (region us-east-1 in its extra)."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_VIA_PROXY", aws_connection_json(proxy.url))
    return "aws_via_proxy"


def signed_region(record: RequestRecord) -> str:
    """The region of a request's SigV4 credential scope (``Credential=key/date/REGION/s3/aws4_request``)."""
    credential = record.headers["authorization"].split("Credential=", 1)[1].split(",", 1)[0]
    return credential.split("/")[2]


def assert_every_request(records: list[RequestRecord], *, region: str, mark: str = MARK) -> None:
    assert records, "no request reached S3"
    assert all(mark in record.headers["user-agent"] for record in records), [
        record.headers["user-agent"] for record in records
    ]
    assert {signed_region(record) for record in records} == {region}


@pytest.mark.parametrize(
    "operator_class",
    [
        RawFileS3BackupOperator,
        S3BackupAuditOperator,
        S3BackupReconcileOperator,
        S3BackupDeepVerifyOperator,
        RawFileS3RestoreOperator,
    ],
)
def test_every_operator_is_an_amazon_operator_with_our_hook(operator_class) -> None:
    assert issubclass(operator_class, AwsBaseOperator)
    assert operator_class.aws_hook_class is KrakenS3Hook
    assert {"aws_conn_id", "region_name", "verify"} <= set(operator_class.template_fields)


def test_backup_operator_region_verify_and_botocore_config_reach_the_client(
    stage, s3_client, project_bucket, proxy, via_proxy
) -> None:
    stage("a.d", {"a.d/analysis.tdf": 1000, "a.d/analysis.tdf_bin": 2 * PART + 5})
    task = operator(
        "a.d",
        aws_conn_id=via_proxy,
        region_name="eu-west-3",
        verify=False,
        botocore_config={"user_agent_extra": MARK, "retries": {"mode": "standard", "max_attempts": 2}},
    )

    result = task.execute(context={})

    record = RawFile.objects.get(id="a.d")
    assert record.backup_status == BackupStatus.DONE and result["bucket"] == project_bucket
    listed = s3_client.list_objects_v2(Bucket=project_bucket)["Contents"]
    assert sorted(item["Key"] for item in listed) == ["a.d/analysis.tdf", "a.d/analysis.tdf_bin"]
    assert any(r.operation == "UploadPart" for r in proxy.requests)
    assert_every_request(proxy.requests, region="eu-west-3")
    client = task.hook.get_conn()
    assert client.meta.region_name == "eu-west-3"
    # botocore counts the first call too: max_attempts=2 (retries) is 3 attempts in all.
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert client._endpoint.http_session._verify is False  # botocore keeps `verify` on the endpoint only
    # Our defaults stay where botocore_config says nothing (KrakenS3Hook.default_client_config).
    assert client.meta.config.read_timeout == 300 and client.meta.config.max_pool_connections == 32


def test_backup_operator_region_from_the_settings_file_reaches_the_client(
    stage, tmp_path, project_bucket, proxy, via_proxy
) -> None:
    stage("y.raw", {"y.raw": 1000})
    settings = tmp_path / "alphakraken.yaml"
    settings.write_text(
        f"backup:\n  backup_type: s3\n  s3:\n    region: eu-north-1\n    bucket_prefix: {PREFIX}\n"
    )
    task = RawFileS3BackupOperator(
        task_id="upload_to_s3",
        raw_file_id="y.raw",
        settings_path=str(settings),
        aws_conn_id=via_proxy,
        botocore_config={"user_agent_extra": MARK},
    )
    assert task.hook.region_name == "us-east-1"  # before execute: the connection's region

    task.execute(context={})

    assert RawFile.objects.get(id="y.raw").backup_status == BackupStatus.DONE
    assert_every_request(proxy.requests, region="eu-north-1")  # the settings file's, over the connection's
    assert task.hook.region_name == "eu-north-1"


def test_backup_operator_region_name_argument_wins_over_the_settings_file(
    stage, tmp_path, project_bucket, proxy, via_proxy
) -> None:
    stage("z.raw", {"z.raw": 1000})
    settings = tmp_path / "alphakraken.yaml"
    settings.write_text("backup:\n  backup_type: s3\n  s3:\n    region: eu-north-1\n")

    operator("z.raw", settings_path=str(settings), region_name="ap-south-1", aws_conn_id=via_proxy).execute(
        context={}
    )

    assert RawFile.objects.get(id="z.raw").backup_status == BackupStatus.DONE
    assert {signed_region(record) for record in proxy.requests} == {"ap-south-1"}


def test_audit_and_reconcile_operators_talk_to_s3_as_configured(backed_up, proxy, via_proxy) -> None:
    backed_up("r.d", {"r.d/a.tdf": 10, "r.d/a.tdf_bin": 20})
    config = {"botocore_config": {"user_agent_extra": MARK}, "region_name": "eu-west-2"}

    summary = S3BackupAuditOperator(task_id="audit", aws_conn_id=via_proxy, **config).execute(context={})
    assert summary["ok"] is True and summary["records"] == 1 and summary["objects_ok"] == 2
    audit_requests = proxy.requests
    assert_every_request(audit_requests, region="eu-west-2")

    report = S3BackupReconcileOperator(
        task_id="reconcile", aws_conn_id=via_proxy, buckets=[BACKED_UP_BUCKET], **config
    ).execute(context={})
    assert report["ok"] is True and report["stuck"] == [] and report["orphans"] == []
    reconcile_requests = proxy.requests[len(audit_requests) :]
    assert any(r.operation == "ListMultipartUploads" for r in reconcile_requests)
    assert_every_request(reconcile_requests, region="eu-west-2")


def test_deep_verify_and_restore_operators_talk_to_s3_as_configured(
    backed_up, tmp_path, proxy, via_proxy
) -> None:
    sizes = {"v.d/analysis.tdf": 2000, "v.d/analysis.tdf_bin": 2 * PART + 3}
    base = backed_up("v.d", sizes)
    config = {"botocore_config": {"user_agent_extra": MARK}, "region_name": "ca-central-1", "verify": False}

    report = S3BackupDeepVerifyOperator(
        task_id="deep", raw_file_id="v.d", aws_conn_id=via_proxy, **config
    ).execute(context={})
    assert report["outcome"] == "ok" and report["bytes"] == sum(sizes.values())
    assert RawFile.objects.get(id="v.d").s3_verified_at is not None
    deep_requests = proxy.requests
    assert any(r.operation == "GetObject" for r in deep_requests)
    assert_every_request(deep_requests, region="ca-central-1")

    destination = tmp_path / "restored"
    restore = RawFileS3RestoreOperator(
        task_id="restore", raw_file_id="v.d", destination=str(destination), aws_conn_id=via_proxy, **config
    )
    assert restore.execute(context={})["ok"] is True
    for relative in sizes:
        assert (destination / relative).read_bytes() == (base / relative).read_bytes()
    assert_every_request(proxy.requests[len(deep_requests) :], region="ca-central-1")
    assert restore.hook.get_conn()._endpoint.http_session._verify is False


def test_existing_arguments_keep_working() -> None:
    """DAGs written before the Amazon base keep their meaning: aws_conn_id positional-free, defaults kept."""
    task = RawFileS3BackupOperator(task_id="t", raw_file_id="x.raw", region_name="eu-central-1")
    assert (task.aws_conn_id, task.region_name, task.verify, task.botocore_config) == (
        "aws_default",
        "eu-central-1",
        None,
        None,
    )
    assert S3BackupAuditOperator(task_id="a", aws_conn_id=None).aws_conn_id is None
    with pytest.raises(ValueError, match="region"):
        RawFileS3BackupOperator(task_id="t", raw_file_id="x.raw", region_name="not a region")
