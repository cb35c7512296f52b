"""What S3 holds under a prefix, from one paginated listing: ETag and size of every object.

For a set of files (a Bruker ``.d`` folder of hundreds) one ListObjectsV2 answers what a HEAD per file
would, at a fraction of the requests (as ``aws s3 sync`` and rclone do). A listing carries no user metadata;
none is needed, since proof is the ETag and the size (:func:`~..core.decision.prove`).
"""

from __future__ import annotations

from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.errors import S3ErrorKind
from airflow_provider_kraken_s3.core.etag import normalize_etag
from airflow_provider_kraken_s3.transfer.access import S3Access


def list_prefix(access: S3Access, bucket: str, prefix: str) -> dict[str, RemoteObject]:
    """Every object under ``prefix`` (key → ETag and size); an empty dict when there is none."""
    found: dict[str, RemoteObject] = {}
    params = {"Bucket": bucket, "Prefix": prefix}
    while True:
        response = access.call(
            "list_objects_v2",
            f"listing s3://{bucket}/{prefix}",
            none_on={S3ErrorKind.NOT_FOUND},
            **params,
        )
        if response is None:
            return found
        for item in response.get("Contents", []):
            found[item["Key"]] = RemoteObject(normalize_etag(item["ETag"]), int(item["Size"]))
        token = response.get("NextContinuationToken")
        if not response.get("IsTruncated") or not token:
            return found
        params["ContinuationToken"] = token
