"""transfer/buckets.py: is the bucket there and ours, does it keep versions, and creating one fit for backups.

Against moto through the FaultProxy; a store's refusals are played by the proxy answering as that store does.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_kraken_s3.core.errors import (
    BucketAccessDeniedError,
    BucketNotFoundError,
    ObjectConflictError,
    S3TransientError,
)
from airflow_provider_kraken_s3.transfer.buckets import (
    MANAGED_BY_TAG,
    PROJECT_TAG,
    check_bucket,
    check_project,
    create_backup_bucket,
    is_versioned,
)
from tests.faults import RequestRecord, Respond, respond

LOG = logging.getLogger("kraken.test.buckets")


@dataclass
class RespondTo(Respond):
    """``Respond`` to the bucket requests whose query names ``subresource`` (``?versioning``, ``?encryption``)
    and, when given, whose method is ``method``: the proxy files them all as ``Other``."""

    subresource: str = ""
    method: str | None = None

    def armed_for(self, record: RequestRecord) -> bool:
        query = parse_qs(urlsplit(record.path).query, keep_blank_values=True)
        return (
            (self.times is None or self.fired < self.times)
            and self.subresource in query
            and (self.method is None or record.method == self.method)
        )


@pytest.fixture
def new_bucket(s3_client):
    """A bucket name nobody has created yet; whatever the test creates under it is removed afterwards."""
    name = f"kraken-new-{uuid.uuid4().hex[:12]}"
    yield name
    try:
        for item in s3_client.list_object_versions(Bucket=name).get("Versions", []):
            s3_client.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"])
        s3_client.delete_bucket(Bucket=name)
    except s3_client.exceptions.ClientError:
        pass


def test_versioning_is_asked_not_assumed(proxy, access, s3_client, bucket) -> None:
    assert is_versioned(access, bucket, LOG) is False
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert is_versioned(access, bucket, LOG) is True
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert is_versioned(access, bucket, LOG) is False  # suspended keeps nothing new
    assert [r.method for r in proxy.requests] == ["GET"] * 3


def test_versioning_we_may_not_read_counts_as_unversioned(proxy, access, s3_client, bucket, caplog) -> None:
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    proxy.add(RespondTo("Other", 403, "AccessDenied", subresource="versioning"))
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert is_versioned(access, bucket, LOG) is False
    assert f"treating bucket '{bucket}' as unversioned" in caplog.text


def test_a_missing_bucket_and_a_denied_one_are_told_apart(proxy, access, bucket) -> None:
    check_bucket(access, bucket)
    with pytest.raises(BucketNotFoundError, match=r"does not exist\. Create it"):
        check_bucket(access, f"kraken-missing-{uuid.uuid4().hex[:8]}")
    proxy.add(respond("HeadBucket", 403, "AccessDenied"))
    with pytest.raises(BucketAccessDeniedError, match=r"access denied to .* for connection 'test'"):
        check_bucket(access, bucket)
    assert [r.status for r in proxy.records("HeadBucket")] == [200, 404, 403]


def test_a_bucket_tagged_for_another_project_is_refused(proxy, access, s3_client, bucket) -> None:
    check_project(access, bucket, "P1234", LOG)  # untagged: nothing to contradict
    s3_client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": PROJECT_TAG, "Value": "P1234"}]})
    check_project(access, bucket, "P1234", LOG)
    with pytest.raises(
        ObjectConflictError, match=r"tagged project_id='P1234', but this raw file belongs to project 'P9999'"
    ):
        check_project(access, bucket, "P9999", LOG)


def test_a_created_bucket_is_versioned_encrypted_tagged_and_blocks_public_access(
    proxy, access, s3_client, new_bucket, caplog
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        create_backup_bucket(access, new_bucket, tags={PROJECT_TAG: "P1234"}, log=LOG)
    assert s3_client.get_bucket_versioning(Bucket=new_bucket)["Status"] == "Enabled"
    rules = s3_client.get_bucket_encryption(Bucket=new_bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    tags = {t["Key"]: t["Value"] for t in s3_client.get_bucket_tagging(Bucket=new_bucket)["TagSet"]}
    assert tags == {PROJECT_TAG: "P1234", MANAGED_BY_TAG[0]: MANAGED_BY_TAG[1]}
    lifecycle = s3_client.get_bucket_lifecycle_configuration(Bucket=new_bucket)["Rules"]
    assert lifecycle[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    block = s3_client.get_public_access_block(Bucket=new_bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    assert (
        s3_client.list_multipart_uploads(Bucket=new_bucket).get("Uploads", []) == []
    )  # the write check left nothing
    assert [r.operation for r in proxy.requests if r.operation != "Other"] == [
        "CreateBucket",
        "CreateMultipartUpload",
        "UploadPart",
        "AbortMultipartUpload",
    ]
    assert "private, versioned, SSE-S3, public access blocked" in caplog.text


def test_a_setting_the_store_refuses_is_one_warning_not_a_failure(
    proxy, access, s3_client, new_bucket, caplog
) -> None:
    """Ceph RGW 16 refuses PutBucketEncryption with InvalidArgument: the bucket is made without it, and said so."""
    proxy.add(RespondTo("Other", 400, "InvalidArgument", subresource="encryption", method="PUT"))
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        create_backup_bucket(access, new_bucket, tags={PROJECT_TAG: "P1234"}, log=LOG)
    assert s3_client.get_bucket_versioning(Bucket=new_bucket)["Status"] == "Enabled"
    assert (
        "lacks default encryption (SSE-S3): the store refused put_bucket_encryption (InvalidArgument"
        in caplog.text
    )
    assert "it LACKS: default encryption (SSE-S3)" in caplog.text


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_a_transient_error_while_configuring_says_what_the_bucket_lacks(proxy, access, new_bucket) -> None:
    proxy.add(RespondTo("Other", 503, "SlowDown", subresource="lifecycle", method="PUT", times=None))
    with pytest.raises(
        S3TransientError, match=r"only partly configured: it lacks the lifecycle rule .*a public access block"
    ):
        create_backup_bucket(access, new_bucket, tags={PROJECT_TAG: "P1234"}, log=LOG)
