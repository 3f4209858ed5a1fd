"""A flow's run as named steps: a step that fails is reported in the run's report and the log,
and the steps after it still run (Amazon being down must not keep staged files from the
warehouse). A stop request ends the run between two steps."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Callable, Iterable, Protocol

from bridge.errors import BridgeError, FixTheSetup, RetryLater


class StepReport(Protocol):
    errors: list[str]
    needs_a_person: bool


def run_steps(steps: Iterable[tuple[str, Callable[[], object]]], report: StepReport, *,
              should_stop: Callable[[], bool], log: logging.Logger, what: str = "run") -> None:
    """Each (name, step) in turn; `what` names the run in the stop line ("stock pass")."""
    prefix = "" if what == "run" else what.split()[0] + " "
    for name, step in steps:
        if should_stop():
            log.info("stop requested: %s ends before step=%s", what, name)
            break
        try:
            step()
        except BridgeError as problem:
            report.errors.append(f"{name}: {problem}")
            report.needs_a_person |= isinstance(problem, FixTheSetup)
            level = logging.WARNING if isinstance(problem, RetryLater) else logging.ERROR
            log.log(level, "%sstep=%s failed: %s", prefix, name, problem)
        except Exception as problem:  # a bug: say where, go on with the other steps
            said = unexpected(problem)
            report.errors.append(f"{name}: {said}")
            report.needs_a_person = True
            log.error("%sstep=%s failed: %s (please report this as a bug)", prefix, name, said)


def unexpected(problem: BaseException) -> str:
    """A bug's exception for a log line or a person: its type and where it was raised, never
    its words (they may quote buyer data or a file's content)."""
    frames = traceback.extract_tb(problem.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"unexpected {type(problem).__name__}{where}"
