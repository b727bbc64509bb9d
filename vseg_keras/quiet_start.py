"""Start TensorFlow without its start-up log lines on stderr.

TensorFlow's native libraries log as they load and as they look for devices, through absl before
its logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence them. On a CPU machine:
"All log messages before absl::InitializeLog() is called are written to STDERR", "Could not find
cuda drivers on your machine" (twice: two libraries load the CUDA stub) and "failed call to cuInit".
None of them is an error for a CPU run, and none changes what is computed.

:func:`start_tensorflow_quietly` imports TensorFlow and lists its devices with the process's native
stderr (file descriptor 2) sent to a temporary file; if either step fails, the captured lines are
written back to stderr before the error propagates. Later log lines (real warnings) are not touched,
and ``TF_CPP_MIN_LOG_LEVEL`` (the CLI sets 2 unless the user set it) filters TensorFlow's own INFO and
WARNING lines as usual. ``vseg`` calls it before each command; Python users may call it first thing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def native_stderr_captured():
    """Sends file descriptor 2 to a temporary file while the block runs; writes what was captured back to
    stderr if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def start_tensorflow_quietly() -> None:
    """Imports TensorFlow and finds its devices without the start-up lines (see the module docstring). Once
    per process; a no-op if TensorFlow was imported already."""
    if "tensorflow" in sys.modules:
        return
    with native_stderr_captured():
        import tensorflow as tf

        tf.config.list_physical_devices()
