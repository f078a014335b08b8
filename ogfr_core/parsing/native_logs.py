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
