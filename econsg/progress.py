"""Rich progress bars for long loops, on stderr: live in a terminal; redirected to a file, each bar's final line only."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def make_progress(*extra_columns) -> Progress:
    """A Progress bar writing to stderr with count, elapsed and remaining time."""
    from rich.console import Console

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=Console(stderr=True),
        transient=False,
    )


def track(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with make_progress() as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)


def plain_console(stderr: bool = False, **options):
    """A rich console that prints text as given: user texts, class names, paths and attributes may hold '[...]', which
    rich markup would swallow ('lamp [red]') or fail on ('[/]'), or ':cat:', which rich would turn into an emoji."""
    from rich.console import Console

    return Console(stderr=stderr, markup=False, emoji=False, **options)


def report(message: str) -> None:
    """One line a stage says about its outcome (what it kept, what looks wrong), on stderr beside its progress bars."""
    plain_console(stderr=True, highlight=False, soft_wrap=True).print(message)
