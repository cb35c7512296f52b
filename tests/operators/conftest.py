"""Fixtures shared by the operator tests (defined beside the tests that introduced them)."""

from tests.operators.test_raw_file_backup import stage  # noqa: F401 - fixture
