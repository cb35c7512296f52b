"""The one-part half of a verified upload: a single PUT, proven by the ETag S3 returns.

The file streams from disk in blocks and is MD5-hashed as it is read. ``Content-MD5`` (the inventory's MD5)
lets S3 refuse bytes that differ before it stores anything; stores that do not check it are caught after:
the returned ETag must equal the MD5 of the bytes read, and that MD5 must equal the inventory's. A single
PUT's ETag is its MD5, so the object needs no metadata to be proven later.
"""

from __future__ import annotations

import base64

from airflow_provider_kraken_s3.core.errors import BackupInterrupted, IntegrityError
from airflow_provider_kraken_s3.core.etag import normalize_etag
from airflow_provider_kraken_s3.transfer.remote import version_of
from airflow_provider_kraken_s3.transfer.shipment import Sent, Shipment
from airflow_provider_kraken_s3.transfer.streams import PartBody, UploadStopped, check_unchanged


def put_single(shipment: Shipment) -> Sent:
    """PUT the file (one part) and prove what S3 stored, or raise saying why it is not a backup."""
    plan, target = shipment.plan, shipment.target
    expected = shipment.expected_digest
    part = next(plan.parts())
    body = PartBody(shipment.path, part, should_stop=shipment.cancel.is_set)
    extra = shipment.object_arguments()
    if expected:
        extra["ContentMD5"] = base64.b64encode(bytes.fromhex(expected)).decode()
    try:
        with shipment.transfer_slot():
            response = shipment.access.call(
                "put_object",
                f"uploading {target}",
                Bucket=shipment.bucket,
                Key=shipment.key,
                Body=body,
                ContentLength=plan.file_size,
                **extra,
            )
    except IntegrityError as error:
        raise IntegrityError(
            f"S3 refused {target}: the bytes read from {shipment.path} do not have the expected MD5 "
            f"{expected}. Nothing was stored; the local file differs from the inventory."
        ) from error
    except Exception:
        # The cancel is heard inside the body: botocore wraps that in a network error when it reads while
        # sending, lets it through as it is when it reads to compute a checksum first, and awscrt (botocore's
        # signer, when installed) turns it into an AwsCrtError when it reads to sign.
        if isinstance(body.failure, UploadStopped):
            raise BackupInterrupted(
                f"upload of {target} stopped before it completed: the attempt was interrupted"
            ) from None
        body.raise_failure()
        raise
    finally:
        body.close()
    check_unchanged(shipment.path, shipment.stat)
    md5 = body.hexdigest()
    shipment.reporter.add(plan.file_size)
    returned = normalize_etag(response["ETag"])  # type: ignore[index]
    if returned != md5:
        raise IntegrityError(
            f"S3 stored {target} with ETag {returned}, but the bytes read from {shipment.path} have MD5 "
            f"{md5}: the data was corrupted in transit. The object is not a backup; re-run the backup."
        )
    if expected and md5 != expected:
        raise IntegrityError(
            f"{shipment.path} was read with MD5 {md5}, but {expected} was expected: the local file differs "
            f"from the inventory, and {target} now holds those bytes (not recorded as a backup; a "
            "versioned bucket keeps the previous version). Restore the file from the instrument and re-run."
        )
    return Sent(etag=md5, md5=md5, parts_sent=(part,), version_id=version_of(response))  # type: ignore[arg-type]
