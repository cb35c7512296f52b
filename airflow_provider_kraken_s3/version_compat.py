"""Airflow version flags for the few places where 2.11 and 3.x differ.

Kept local (as the Amazon provider does) so we do not depend on another provider's private module.
"""

from __future__ import annotations

import functools


@functools.cache
def get_base_airflow_version_tuple() -> tuple[int, int, int]:
    from airflow import __version__
    from packaging.version import Version

    version = Version(__version__)
    return version.major, version.minor, version.micro


AIRFLOW_V_3_0_PLUS: bool = get_base_airflow_version_tuple() >= (3, 0, 0)

__all__ = ["AIRFLOW_V_3_0_PLUS"]
