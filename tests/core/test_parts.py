from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.parts import (
    DEFAULT_PART_SIZE,
    GIB,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIB,
    MIN_PART_SIZE,
    plan_parts,
)


@given(
    size=st.integers(0, MAX_PARTS * MAX_PART_SIZE),
    part_mib=st.integers(MIN_PART_SIZE // MIB, MAX_PART_SIZE // MIB),
)
def test_plan_covers_the_file_within_s3_limits(size: int, part_mib: int) -> None:
    part_size = part_mib * MIB
    plan = plan_parts(size, part_size)
    parts = list(plan.parts())
    assert len(parts) == plan.part_count <= MAX_PARTS
    assert parts[0].offset == 0
    assert sum(p.length for p in parts) == size
    assert all(a.end == b.offset for a, b in itertools.pairwise(parts))
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    assert MIN_PART_SIZE <= plan.part_size <= MAX_PART_SIZE
    assert plan.is_multipart == (size > plan.part_size)
    if plan.adjusted_from is None:
        assert plan.part_size == part_size
    else:
        assert plan.part_size % MIB == 0 and plan.part_size > part_size
        assert math.ceil(size / (plan.part_size - MIB)) > MAX_PARTS  # the smallest whole MiB that fits


def test_default_part_size_is_alphakrakens_100_mib() -> None:
    assert plan_parts(10 * GIB).part_size == DEFAULT_PART_SIZE == 100 * MIB
    assert plan_parts(10 * GIB).part_count == 103


def test_too_many_parts_raises_part_size_and_says_so() -> None:
    plan = plan_parts(100 * GIB, 5 * MIB)
    assert plan.part_size == 11 * MIB and plan.part_count <= MAX_PARTS
    assert "raised from 5 MiB to 11 MiB" in plan.describe_adjustment()
    assert plan_parts(GIB, 5 * MIB).describe_adjustment() is None


def test_fixed_part_size_is_kept_or_refused() -> None:
    assert plan_parts(GIB, 7 * MIB, fixed=True).part_size == 7 * MIB
    with pytest.raises(InvalidInputError, match="cannot be reproduced"):
        plan_parts(100 * GIB, 5 * MIB, fixed=True)


@pytest.mark.parametrize("part_size", [0, MIN_PART_SIZE - 1, MAX_PART_SIZE + 1, True, 5.5 * MIB, 5 * MIB + 1])
def test_invalid_part_sizes_are_refused(part_size) -> None:
    with pytest.raises(InvalidInputError, match="part_size"):
        plan_parts(10, part_size)


def test_a_part_size_that_is_not_whole_mib_is_refused_at_parse_time() -> None:
    """Defect 9: it used to pass and fail only after the upload, when '<etag>__<MiB>' was written."""
    with pytest.raises(InvalidInputError, match=r"not a whole number of MiB.*e\.g\. 5242880"):
        plan_parts(10, 5 * MIB + 1)


def test_empty_and_single_part_files_are_single_put() -> None:
    assert [(p.offset, p.length) for p in plan_parts(0).parts()] == [(0, 0)]
    assert not plan_parts(DEFAULT_PART_SIZE).is_multipart
    assert plan_parts(DEFAULT_PART_SIZE + 1).part_count == 2


def test_files_beyond_s3_maximum_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="maximum object size"):
        plan_parts(MAX_PARTS * MAX_PART_SIZE + 1)


def test_property_tests_have_no_deadline() -> None:
    """A loaded machine makes an example slow, not wrong (the profile is loaded in tests/conftest.py)."""
    from hypothesis import settings

    assert settings().deadline is None
