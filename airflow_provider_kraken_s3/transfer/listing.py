"""What S3 holds under a prefix, from one paginated listing: ETag and size of every object.

For a set of files (a Bruker ``.d`` folder of hundreds) one ListObjectsV2 answers what a HEAD per file
would, at a fraction of the requests (as ``aws s3 sync`` and rclone do). A listing carries no user metadata;
none is needed, since proof is the ETag and the size (:func:`~..core.decision.prove`).
"""

from __future__ import annotations

from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.errors import PermanentBackupError, S3ErrorKind
from airflow_provider_kraken_s3.core.etag import normalize_etag
from airflow_provider_kraken_s3.transfer.access import S3Access


def list_prefix(access: S3Access, bucket: str, prefix: str) -> dict[str, RemoteObject]:
    """Every object under ``prefix`` (key → ETag and size); an empty dict when there is none.

    A page that says it is truncated but gives no token to continue from would end the listing early, and a
    partial listing reads as objects missing (uploaded again without a look, or reported missing): it fails.
    """
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
        if not response.get("IsTruncated"):
            return found
        token = response.get("NextContinuationToken")
        if not token:
            raise PermanentBackupError(
                f"listing s3://{bucket}/{prefix}: the store answered a truncated page (after {len(found)} "
                "objects) without a NextContinuationToken, so the rest cannot be listed and nothing can be "
                "concluded from the part seen. The store does not implement ListObjectsV2 paging; check it."
            )
        params["ContinuationToken"] = token
