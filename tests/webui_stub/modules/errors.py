"""Stand-in for A1111 ``modules/errors.py``, written for these tests: the WebUI *reports* exceptions from
extension code and goes on.

Script hooks, callbacks, ``preload()``, script loading and UI calls are all wrapped this way in A1111,
so an exception in an extension never aborts a generation. Kept: ``report`` and ``display`` print to
stderr, and every report/display remembers the exception being handled in ``exception_records``
(``{"exception": str, "traceback": [[where, source line], ...]}``, the last 5, newest last).
Added for tests: ``reported`` keeps *every* report as (message, exception) — assert it is empty.
Left out: ``print_error_explanation``, ``get_exceptions``, version checks.
"""
import sys
import textwrap
import traceback

KEEP_RECORDS = 5
exception_records = []
reported: list = []


def record_exception():
    """Add the exception currently being handled (if any) to ``exception_records``."""
    exc = sys.exc_info()[1]
    if exc is None:
        return
    frames = traceback.extract_tb(exc.__traceback__)
    record = {"exception": str(exc),
              "traceback": [[f"{frame.filename}, line {frame.lineno}, {frame.name}", frame.line] for frame in frames]}
    if exception_records[-1:] != [record]:  # report() then display() of one exception: record it once
        exception_records.append(record)
        del exception_records[:-KEEP_RECORDS]


def report(message: str, *, exc_info: bool = False) -> None:
    """Print ``message`` (each line prefixed with ``***``), with the current traceback when ``exc_info``."""
    record_exception()
    exc = sys.exc_info()[1] if exc_info else None
    reported.append((message, exc))
    text = "".join(f"*** {line}\n" for line in message.splitlines())
    if exc_info:
        text += textwrap.indent(traceback.format_exc(), "    ") + "---\n"
    sys.stderr.write(text)


def display(e: Exception, task, *, full_traceback=False):
    """Print ``e`` (raised while doing ``task``) with its traceback."""
    record_exception()
    reported.append((f"{task}: {type(e).__name__}: {e}", e))
    details = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    sys.stderr.write(f"{task or 'error'}: {type(e).__name__}\n{details}")
