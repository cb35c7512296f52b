"""Fixtures shared by the operator tests (defined beside the tests that introduced them)."""

from tests.operators.test_raw_file_backup import project_bucket, stage  # noqa: F401 - fixtures
