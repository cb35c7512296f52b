"""Restore from S3, as a DAG task: each file verified against the inventory before it is put in place.

A thin face over :mod:`..services.restore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_kraken_s3.core.errors import PermanentBackupError
from airflow_provider_kraken_s3.operators.deep_verify import BackupReaderOperator
from airflow_provider_kraken_s3.services.restore import restore_raw_file

if TYPE_CHECKING:
    from airflow.sdk import Context


class RawFileS3RestoreOperator(BackupReaderOperator):
    """Restore a raw file's files from S3 into ``destination``, each verified before it is put in place.

    Files are written to a temporary name, checked against the inventory (MD5 and ETag), fsynced and
    renamed; a retry continues an interrupted download. Existing files are never replaced unless
    ``overwrite``. Fails without retries when the bytes are wrong, an object is missing, a file exists, or
    objects must first be restored from an archive tier; S3 trouble is retried. Returns the report.

    :param raw_file_id: the RawFile to restore (templated).
    :param destination: folder to restore into, at the inventory's relative paths (templated).
    :param overwrite: replace existing files that differ from the inventory.
    :param max_concurrency: ranged GETs in flight.

    ``aws_conn_id``, ``region_name``, ``verify`` and ``botocore_config`` are the Amazon provider's (see
    :class:`~.deep_verify.BackupReaderOperator`).
    """

    template_fields: Sequence[str] = aws_template_fields("raw_file_id", "destination")

    def __init__(self, *, raw_file_id: str, destination: str, overwrite: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.raw_file_id = raw_file_id
        self.destination = destination
        self.overwrite = overwrite

    def execute(self, context: Context) -> dict[str, Any]:
        access = self._connect()
        try:
            report = restore_raw_file(
                access,
                self.raw_file_id,
                self.destination,
                overwrite=self.overwrite,
                max_concurrency=self.max_concurrency,
                cancel=self._cancel,
                log=self.log,
            )
            self.log.info("%s", report.summary())
            report.check()
        except PermanentBackupError as error:  # wrong bytes, missing objects, files in the way, archived
            raise AirflowFailException(str(error)) from error
        return report.as_dict()
