"""Stand-in for A1111 ``modules/call_queue.py``, written for these tests: how a UI button's handler is
wrapped by ``wrap_gradio_gpu_call(func, extra_outputs)``.

Behaviour kept: the call runs under ``queue_lock`` between ``state.begin(job=id_task)`` (the first
argument when it looks like ``"task(...)"``) and ``state.end()``; afterwards, whatever happened, the
interrupt/skip/stop flags and the job are reset. An exception is *reported* (``errors.report``) and the
outputs become ``extra_outputs`` (default ``[None, ""]``) plus ``"<div class='error'>Type: message</div>"``;
the last output then gets a ``<div class='performance'>`` with the time taken.
Left out: the other wrappers, progress-API task bookkeeping, memory statistics, profiling.
"""
import functools
import html
import threading
import time

from modules import devices, errors, shared

queue_lock = threading.RLock()

_STATE_AFTER_A_CALL = {"skipped": False, "interrupted": False, "stopping_generation": False, "job_count": 0, "job": ""}


def _task_id(args):
    first = args[0] if args else None
    is_task = isinstance(first, str) and first.startswith("task(") and first.endswith(")")
    return first if is_task else None


def wrap_gradio_gpu_call(func, extra_outputs=None):
    @functools.wraps(func)
    def handler(*args, **kwargs):
        started = time.perf_counter()
        try:
            with queue_lock:
                shared.state.begin(job=_task_id(args))
                outputs = list(func(*args, **kwargs))
                shared.state.end()
        except Exception as e:
            arguments = f"{args} {kwargs}"
            errors.report(f"Error completing request\nArguments: {arguments[:4000]}", exc_info=True)
            fallback = [None, ""] if extra_outputs is None else list(extra_outputs)
            outputs = fallback + [f"<div class='error'>{html.escape(f'{type(e).__name__}: {e}')}</div>"]
        finally:
            for name, value in _STATE_AFTER_A_CALL.items():
                setattr(shared.state, name, value)
        devices.torch_gc()
        seconds = time.perf_counter() - started
        outputs[-1] += f"<div class='performance'><p class='time'>Time taken: {seconds:.1f} sec.</p></div>"
        return tuple(outputs)

    return handler
