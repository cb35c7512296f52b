"""Airflow provider: verified, resumable S3 backup of mass-spectrometry raw files."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_INTEGRATION = "Kraken S3 Backup"


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-kraken-s3",
        "name": "Kraken S3 Backup",
        "description": "Verified, resumable S3 backup of mass-spectrometry raw files (alphakraken).",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://github.com/MannLabs/alphakraken",
                "tags": ["aws"],
            }
        ],
        "hooks": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_kraken_s3.hooks.kraken_s3",
                ],
            }
        ],
    }
