"""The process-wide native stderr filter of parse workers (ogfr_core/parsing/native_logs.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import os, sys, threading, time
from ogfr_core.parsing.native_logs import filter_process_stderr
filter_process_stderr()
filter_process_stderr()  # idempotent
def late_native_logger():  # like a mediapipe graph thread logging after process() returned
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"W0000 00:00:1732.5   123 inference_feedback_manager.cc:114] chatter\n")
t = threading.Thread(target=late_native_logger); t.start(); t.join()
os.write(2, b"E0000 00:00:1.0 1 real_error.cc:1] kept\n")
os.write(2, b"\rparse:  50%")
print("a python log line", file=sys.stderr)
raise SystemExit(3)
"""


def run(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_process_filter_drops_late_native_chatter_and_keeps_the_rest():
    proc = run(OGFR_NATIVE_LOGS="0")
    assert proc.returncode == 3
    assert b"XNNPACK" not in proc.stderr and b"inference_feedback_manager" not in proc.stderr
    # an E-level native line, a partial progress-bar line and Python output all survive, in order
    assert proc.stderr == b"E0000 00:00:1.0 1 real_error.cc:1] kept\n\rparse:  50%a python log line\n"


def test_process_filter_is_off_with_native_logs_on():
    proc = run(OGFR_NATIVE_LOGS="1")
    assert b"XNNPACK" in proc.stderr and b"inference_feedback_manager" in proc.stderr
