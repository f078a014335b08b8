"""Native (C++) log chatter of third-party parsing libraries, dropped at the file descriptor.

mediapipe 0.10.21 logs through absl (statically linked into its extension, no exported symbol to
call) and TFLite's minimal logger; neither reads an environment variable: ``GLOG_minloglevel``,
``TF_CPP_MIN_LOG_LEVEL`` and ``ABSL_MIN_LOG_LEVEL`` were measured to change nothing. So the calls
that print run under :func:`native_stderr_filtered`, which drops exactly the lines of
:data:`NATIVE_CHATTER` and writes everything else back. (Kept in ``parsing/``, not ``runtime.py``,
which every DVC stage depends on: a change here reruns the parse stage only.)
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator, Sequence


# Native log lines of mediapipe / TFLite that carry no information for a user of the pipeline.
NATIVE_CHATTER: tuple[re.Pattern[bytes], ...] = (
    re.compile(rb"^[IW]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] "),  # absl/glog INFO + WARNING lines
    re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\s*$"),
    re.compile(rb"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.\s*$"),
)
NATIVE_LOGS_ENV = "OGFR_NATIVE_LOGS"  # set to 1 to see every native log line (debugging a backend)


@contextmanager
def native_stderr_filtered(drop: Sequence[re.Pattern[bytes]] = NATIVE_CHATTER) -> Iterator[None]:
    """Run the block with file descriptor 2 captured; on exit, write back every captured line that
    matches none of ``drop`` (so errors, ``E``/``F`` native lines, Python log records and tqdm
    output written meanwhile are kept, only in a later order).

    Used around third-party native calls whose C++ loggers cannot be configured (see
    :data:`NATIVE_CHATTER`). ``OGFR_NATIVE_LOGS=1`` turns the filter off. Not for concurrent use
    from several threads of one process (it swaps the process-wide descriptor). A native crash
    inside the block loses what it wrote there: rerun with ``OGFR_NATIVE_LOGS=1`` to see it.
    """
    if os.environ.get(NATIVE_LOGS_ENV, "") not in ("", "0"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True)
                    if not any(p.search(line) for p in drop)]
            data = memoryview(b"".join(kept))
            while data:
                data = data[os.write(2, data):]


_PROCESS_FILTER: list = []  # the installed filter's stop function (at most one per process)


def filter_process_stderr(drop: Sequence[re.Pattern[bytes]] = NATIVE_CHATTER) -> None:
    """Filter file descriptor 2 of *this process* for the rest of its life (a parse worker's).

    :func:`native_stderr_filtered` only covers the calls it wraps, but mediapipe's graph threads may
    log after ``process`` returned (the TFLite delegate line, seen under load). A worker therefore
    routes fd 2 through a pipe whose reader thread drops the complete lines matching ``drop`` and
    writes everything else to the original stderr. Lines are forwarded when their newline arrives;
    a trailing partial line is forwarded at once unless it could start a native log line (so a
    progress bar would not stall). Stopped at process exit (``atexit`` and multiprocessing's
    finalizers, which pool workers run before ``os._exit``); idempotent; ``OGFR_NATIVE_LOGS=1``
    turns it off.
    """
    if _PROCESS_FILTER or os.environ.get(NATIVE_LOGS_ENV, "") not in ("", "0"):
        return
    import atexit
    import threading
    from multiprocessing import util

    maybe_native = re.compile(rb"^(?:[IWEF]\d|INFO: |WARNING: )")
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(original, view):]

    def pump() -> None:
        pending = b""
        while chunk := os.read(read_end, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            forward(b"".join(line + b"\n" for line in lines if not any(p.search(line) for p in drop)))
            if pending and not maybe_native.match(pending):
                forward(pending)
                pending = b""
        forward(pending)
        os.close(read_end)

    thread = threading.Thread(target=pump, name="native-stderr-filter", daemon=True)
    thread.start()

    def stop() -> None:
        if not _PROCESS_FILTER:
            return
        _PROCESS_FILTER.clear()
        try:
            sys.stderr.flush()
        finally:
            os.dup2(original, 2)  # the pipe's last write end closes: the reader drains and ends
            thread.join(timeout=5)

    _PROCESS_FILTER.append(stop)
    atexit.register(stop)
    util.Finalize(None, stop, exitpriority=100)
