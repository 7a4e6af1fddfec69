"""Stand-in for A1111 ``modules/call_queue.py`` (21-133): ``wrap_gradio_gpu_call`` holds
``queue_lock``, wraps the handler in ``state.begin(job)``/``end()`` (a first argument
"task(...)" is the job) and resets the flags after; a failure is reported and answered with
``extra_outputs + [error html]``; timing HTML is appended to the LAST output.
"""

import functools
import html
import threading
import time

from modules import errors, shared

queue_lock = threading.Lock()


def wrap_gradio_gpu_call(func, extra_outputs=None):
    @functools.wraps(func)
    def as_job(*args, **kwargs):
        first = args[0] if args else None
        is_task = isinstance(first, str) and first.startswith("task(") and first.endswith(")")
        with queue_lock:
            shared.state.begin(job=first if is_task else None)
            try:
                return func(*args, **kwargs)
            finally:
                shared.state.end()

    return wrap_gradio_call(as_job, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(func, extra_outputs=None, add_stats=False):  # resets the job flags
    @functools.wraps(func)
    def reset_after(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        finally:
            vars(shared.state).update(skipped=False, interrupted=False,
                                      stopping_generation=False, job_count=0, job="")

    return wrap_gradio_call_no_job(reset_after, extra_outputs, add_stats)


def wrap_gradio_call_no_job(func, extra_outputs=None, add_stats=False):  # errors and timing
    @functools.wraps(func)
    def guarded(*args, extra_outputs_array=extra_outputs, **kwargs):
        started = time.perf_counter()
        try:
            outputs = list(func(*args, **kwargs))
        except Exception as exc:
            errors.report(f"Error completing request\nArguments: {args} {kwargs}"[:131072],
                          exc_info=True)
            message = html.escape(f"{type(exc).__name__}: {exc}")
            outputs = list(extra_outputs_array if extra_outputs_array is not None else [None, ""])
            outputs.append(f"<div class='error'>{message}</div>")
        if add_stats:
            spent = time.perf_counter() - started
            text = f"{int(spent // 60)} min. " * (spent >= 60) + f"{spent % 60:.1f} sec."
            outputs[-1] += ("<div class='performance'><p class='time'>Time taken: <wbr>"
                            f"<span class='measurement'>{text}</span></p></div>")
        return tuple(outputs)

    return guarded
