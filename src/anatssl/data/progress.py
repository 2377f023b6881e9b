"""``with progress_bar(show, total, title) as advance:``: the progress bar of the data checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(show: bool, total: int, title: str = "checking scans") -> Iterator[Callable[[], None]]:
    """``with progress_bar(show, total) as advance:`` a rich bar, or a no-op when ``show`` is False."""
    if not show:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(title), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("check", total=total)
        yield lambda: bar.advance(task)
