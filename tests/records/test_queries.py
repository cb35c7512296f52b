"""records/queries.py: the record filter, as far as alphakraken's records need it."""

from __future__ import annotations

from airflow_provider_kraken_s3.records.queries import RecordFilter


def test_the_fallback_project_includes_records_without_a_project() -> None:
    """Records older than alphakraken's 2026 migration hold ``project_id: null``: their model reads ``_FALLBACK``."""
    assert RecordFilter(project_ids=("_FALLBACK",)).query() == {"project_id": {"$in": ["_FALLBACK", None]}}
    assert RecordFilter(project_ids=("P1",)).query() == {"project_id": {"$in": ["P1"]}}
