"""Keep native library chatter (TensorFlow, ExecuTorch, coremltools loaders) off the terminal.

Converters and runtimes print to file descriptors 1 and 2 from C++; only an fd-level redirect
silences them. The text goes to a log file when one is given. MOBILEDEPLOY_VERBOSE=1 disables it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


@contextlib.contextmanager
def native_quiet(log_path: Path | None = None):
    if os.environ.get("MOBILEDEPLOY_VERBOSE"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sink = open(log_path if log_path is not None else os.devnull, "ab")
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        sink.close()
