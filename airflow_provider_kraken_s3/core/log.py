"""The logger a service or the transfer engine writes to: the few methods they call, nothing more.

The Airflow faces hand over their own ``self.log`` (a :class:`logging.Logger` on Airflow 2, Airflow's
structlog-backed ``Logger`` on Airflow 3); the command line and the tests a :class:`logging.Logger`. Both
satisfy :class:`Log` as they are, so no face has to cast. Messages are %-style with positional arguments
(``log.info("uploaded %s", key)``), the one form both loggers format alike; keyword arguments are not part
of the protocol.
"""

from __future__ import annotations

from typing import Protocol


class Log(Protocol):
    """What services and the transfer engine need of a logger: one method per level, %-style."""

    def debug(self, msg: str, /, *args: object) -> object: ...

    def info(self, msg: str, /, *args: object) -> object: ...

    def warning(self, msg: str, /, *args: object) -> object: ...

    def error(self, msg: str, /, *args: object) -> object: ...

    def exception(self, msg: str, /, *args: object) -> object: ...
