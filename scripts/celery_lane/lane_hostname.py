"""``[core] hostname_callable`` for the Celery lane: each worker names itself (``KRAKEN_LANE_HOSTNAME``).

Two workers on one machine otherwise record the same hostname on every task instance, and the lane could
not tell which worker ran (or lost) a task.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("KRAKEN_LANE_HOSTNAME") or socket.getfqdn()
