"""list_prefix against moto server through the FaultProxy: every page, and never a silent partial listing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from airflow_provider_kraken_s3.core.errors import PermanentBackupError
from airflow_provider_kraken_s3.transfer.listing import list_prefix
from tests.conftest import put_object
from tests.faults import Fault, ProxiedResponse, RequestRecord


@dataclass
class TruncatedWithoutToken(Fault):
    """A store's ListObjectsV2 page that says ``IsTruncated`` but gives no ``NextContinuationToken``."""

    def on_response(self, record: RequestRecord, response: ProxiedResponse) -> None:
        response.body = response.body.replace(
            b"<IsTruncated>false</IsTruncated>", b"<IsTruncated>true</IsTruncated>"
        )


def test_every_object_of_the_prefix_is_listed(access, s3_client, bucket) -> None:
    for name in ("a", "b", "sub/c"):
        put_object(s3_client, bucket, f"x.d/{name}", name.encode())
    put_object(s3_client, bucket, "y.d/a", b"other")
    assert sorted(list_prefix(access, bucket, "x.d/")) == ["x.d/a", "x.d/b", "x.d/sub/c"]


def test_a_truncated_page_without_a_token_fails_loudly(access, proxy, s3_client, bucket) -> None:
    """Defect 11a: stopping there would read the rest of the set as missing."""
    put_object(s3_client, bucket, "t.d/a", b"a")
    proxy.add(TruncatedWithoutToken("ListObjectsV2"))
    with pytest.raises(PermanentBackupError, match=r"truncated page .*without a NextContinuationToken"):
        list_prefix(access, bucket, "t.d/")
    assert proxy.records("ListObjectsV2")[0].fault_fired
