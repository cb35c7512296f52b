"""Airflow provider: verified, resumable S3 backup of mass-spectrometry raw files."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_INTEGRATION = "Kraken S3 Backup"

#: Labels and placeholders of the ``kraken_mongo`` Connection form. Declared here (Airflow >= 3.2 reads
#: provider info) and returned by ``KrakenMongoHook.get_ui_field_behaviour`` (older Airflow asks the hook).
MONGO_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": [],
    "relabeling": {"host": "Host or mongodb:// URI", "schema": "Database", "login": "Username"},
    "placeholders": {
        "host": "mongo.example.org  or  mongodb+srv://cluster.example.org",
        "port": "27017",
        "schema": "krakendb",
        "login": "kraken",
        "extra": '{"authSource": "krakendb", "tls": true, "serverSelectionTimeoutMS": 10000}',
    },
}


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
                    "airflow_provider_kraken_s3.hooks.kraken_mongo",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_kraken_s3.operators.audit",
                    "airflow_provider_kraken_s3.operators.deep_verify",
                    "airflow_provider_kraken_s3.operators.raw_file_backup",
                    "airflow_provider_kraken_s3.operators.restore",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_kraken_s3.sensors.backup_verified"],
            }
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_kraken_s3.triggers.backup_verified"],
            }
        ],
        # Listed so the webserver (2.11) and API server (3.x) can show the link of serialized tasks.
        "extra-links": ["airflow_provider_kraken_s3.links.S3BackupLink"],
        # S3 reuses the Amazon provider's ``aws`` connection type; only MongoDB gets a type of its own.
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_kraken_s3.hooks.kraken_mongo.KrakenMongoHook",
                "hook-name": "Kraken MongoDB",
                "connection-type": "kraken_mongo",
                "ui-field-behaviour": MONGO_UI_FIELD_BEHAVIOUR,
            }
        ],
    }
