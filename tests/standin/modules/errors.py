"""Stand-in for A1111 ``modules/errors.py`` (``report`` 26-45, ``display``, ``run``): a failure
is printed and the caller carries on; the stand-in also keeps each one in ``reported``."""

import sys
import traceback
from dataclasses import dataclass


@dataclass
class Failure:
    message: str
    exception: BaseException | None
    traceback: str


reported: list = []


def report(message, *, exc_info=False):
    exc = sys.exc_info()[1] if exc_info else None
    reported.append(Failure(message, exc, traceback.format_exc() if exc else ""))
    print(f"*** {message}\n{reported[-1].traceback}", file=sys.stderr)


def display(e, task, *, full_traceback=False):
    reported.append(Failure(task, e, "".join(traceback.format_exception(e))))
    print(f"{task or 'error'}: {type(e).__name__}: {e}", file=sys.stderr)

