"""What the ``kraken-s3`` command shows: progress bars and tables on a terminal, JSON for scripts.

Everything a person reads goes to stderr (progress, tables, notes) unless it *is* the answer; the answer goes
to stdout, as a table or, with ``--json``, as one JSON object per line, so ``kraken-s3 audit --json | jq``
works while a progress bar runs on the terminal.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from airflow_provider_kraken_s3.core.parts import MIB


class ExitCode(enum.IntEnum):
    """Exit codes scripts can branch on (also listed in ``kraken-s3 --help``)."""

    OK = 0  #: everything checked is as it should be
    PROBLEM = 1  #: a backup is missing, differs, or failed verification: act on the report
    USAGE = 2  #: bad arguments (argparse's own code)
    UNAVAILABLE = 3  #: could not check: S3 or MongoDB unreachable, bad connection, no such record
    NEEDS_RESTORE = 4  #: objects are in an archive storage class: restore them from the archive first
    NOTHING_CHECKED = 5  #: nothing matched the filter, so nothing was checked (``--allow-empty`` accepts it)


class Output:
    """One command's output channel: ``json`` lines on stdout, or a rich console for people."""

    def __init__(self, *, as_json: bool, progress: bool, answers: TextIO | None = None) -> None:
        """``answers``: where results go (stdout by default); the caller may point ``sys.stdout`` elsewhere
        while a command runs, so that what libraries print (Airflow 3 logs to stdout) never mixes with them."""
        self.as_json = as_json
        self.show_progress = progress and not as_json and sys.stderr.isatty()
        self.answers = answers or sys.stdout
        # Piped output is never cut to 80 columns: an ETag with an ellipsis is worse than a wide line.
        self.out = Console(file=self.answers, soft_wrap=True, width=None if self.answers.isatty() else 1000)
        self.err = Console(stderr=True, soft_wrap=True)

    def record(self, item: Mapping[str, Any]) -> None:
        """One machine-readable result (only in ``--json`` mode)."""
        if self.as_json:
            print(json.dumps(item, default=str, sort_keys=True), file=self.answers, flush=True)

    def say(self, text: str) -> None:
        """A line for people (stdout, since it is the answer; silent in ``--json`` mode)."""
        if not self.as_json:
            self.out.print(text, highlight=False)

    def note(self, text: str) -> None:
        """A remark about the run, never the answer: stderr, in both modes."""
        self.err.print(text, highlight=False)

    def table(
        self,
        title: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        whole: Collection[str] = (),
    ) -> None:
        """A table for people; the columns named in ``whole`` (hashes, ETags) are never wrapped, so they can
        be copied from the terminal; the others fold on a narrow one."""
        if self.as_json:
            return
        table = Table(title=title, title_justify="left")
        for column in columns:
            if column in whole:
                table.add_column(column, no_wrap=True)
            else:
                table.add_column(column, overflow="fold")  # wrapped on a narrow terminal, never cut
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        self.out.print(table)

    def fields(self, title: str, blocks: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> None:
        """Named values for people, one block per item (``(heading, [(label, value), ...])``): a form that
        keeps a 32-digit hash on one line on an 80-column terminal, where a table of several would wrap."""
        if self.as_json:
            return
        self.out.print(title, highlight=False)
        for heading, pairs in blocks:
            self.out.print(Text(heading, overflow="fold"), highlight=False, soft_wrap=False)
            grid = Table.grid(padding=(0, 2))
            grid.add_column(no_wrap=True)
            grid.add_column(no_wrap=True)
            for label, value in pairs:
                grid.add_row(f"  {label}", value)
            self.out.print(grid)

    def text(self, text: str) -> None:
        """Pre-rendered text that is the answer (a report): stdout as is, silent in ``--json`` mode."""
        if not self.as_json:
            self.answers.write(text)
            self.answers.flush()

    @contextmanager
    def count_progress(self, description: str, total: int | None = None) -> Iterator[Callable[[], None]]:
        """A counter on stderr (a terminal only), for work counted in items; yields ``advance()``."""
        if not self.show_progress:
            yield lambda: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.err, transient=True) as progress:
            task = progress.add_task(description, total=total)
            yield lambda: progress.advance(task)

    @contextmanager
    def bytes_progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A byte progress bar on stderr (a terminal only); yields ``advance(n)``."""
        if not self.show_progress:
            yield lambda _n: None
            return
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MiBColumn(),
            MiBSpeedColumn(),
            TimeRemainingColumn(),
            console=self.err,
            transient=True,
        ) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task, n)


class MiBColumn(ProgressColumn):
    """Bytes done and total, both in MiB (the unit of part sizes and of the task logs' ``done_mib``)."""

    def render(self, task: Task) -> Text:
        total = f"{task.total / MIB:,.1f}" if task.total is not None else "?"
        return Text(f"{task.completed / MIB:,.1f}/{total} MiB", style="progress.download")


class MiBSpeedColumn(ProgressColumn):
    """Speed in MiB/s, the unit of the byte column beside it and of the task logs' ``rate_mib_s``."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        text = "?" if speed is None else f"{speed / MIB:,.1f} MiB/s"
        return Text(text, style="progress.data.speed")
