"""The "S3 backup" extra link: from a backup task to the object or folder it proved in S3.

The URL is worked out while the task runs, from the connection it used (the endpoint and region of that
moment), and kept in an XCom; the UI reads it back after the run, on Airflow 2.11 (webserver) and 3.x (the
task runner stores each link's URL when the task ends). A failed backup stores none: there is nothing to
show yet.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import TaskInstanceKey
    from airflow.sdk import BaseOperator, Context

log = logging.getLogger(__name__)

#: Hosts of AWS's own S3 endpoints (regional, dual-stack, FIPS, VPC interface endpoints).
_AWS_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn")


def backup_url(*, bucket: str, key: str, endpoint_url: str | None, region: str | None) -> str:
    """Where a person sees ``s3://bucket/key`` (a key ending in ``/`` is a folder of a raw file's set).

    AWS (no ``endpoint_url``, or an ``*.amazonaws.com`` one): the S3 console page of the object, or of the
    folder. Any other endpoint (Ceph RGW, MinIO, ...) has no console we could know, so what its S3 API
    serves, path-style: the object ``{endpoint}/{bucket}/{key}``, or for a folder the listing of its objects
    (``ListObjectsV2`` with the folder as prefix; the folder's own path is no object, a 404 on every store).
    Both open where the store allows anonymous reads, and name the objects exactly where it does not.
    """
    if endpoint_url and not _is_aws(endpoint_url):
        base = f"{endpoint_url.rstrip('/')}/{bucket}"
        if key.endswith("/"):
            return f"{base}/?list-type=2&prefix={quote(key, safe='')}"
        return f"{base}/{quote(key, safe='/')}"
    console = _console(region)
    query = f"?region={region}&bucketType=general" if region else "?bucketType=general"
    if key.endswith("/"):
        return f"{console}/s3/buckets/{bucket}{query}&prefix={quote(key, safe='/')}&showversions=false"
    return f"{console}/s3/object/{bucket}{query}&prefix={quote(key, safe='/')}"


def _is_aws(endpoint_url: str) -> bool:
    host = urlsplit(endpoint_url if "//" in endpoint_url else f"//{endpoint_url}").hostname or ""
    return host.endswith(_AWS_HOST_SUFFIXES)


def _console(region: str | None) -> str:
    """The console of the region's partition (China and GovCloud have consoles of their own)."""
    if region and region.startswith("cn-"):
        return "https://console.amazonaws.cn"
    if region and region.startswith("us-gov-"):
        return "https://console.amazonaws-us-gov.com"
    return f"https://{region}.console.aws.amazon.com" if region else "https://console.aws.amazon.com"


class S3BackupLink(BaseOperatorLink):
    """Button "S3 backup" on a backup task: the backed-up object or folder (see :func:`backup_url`)."""

    name = "S3 backup"

    #: XCom key of the URL, written by :meth:`persist` during the run.
    key = "kraken_s3_backup_url"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return XCom.get_value(key=self.key, ti_key=ti_key) or ""

    @classmethod
    def persist(cls, context: Context | dict[str, Any], url: str) -> None:
        """Keep the URL of this run for the UI. Outside a task run (no task instance) there is none to keep.

        Called after the backup is verified and recorded: a link that cannot be kept (an XCom backend
        error) is a missing button, not a reason to fail, and so retry, a backup that is done.
        """
        ti = context.get("ti") if context else None
        if ti is None:
            return
        try:
            ti.xcom_push(key=cls.key, value=url)
        except Exception as error:
            log.warning("the S3 backup link %s was not kept for the UI (%s); the backup is done", url, error)
