"""Import TensorFlow without its C++ start-up chatter (absl notices, CUDA probes on CPU-only machines).

Importing this module imports TensorFlow once with the process's stderr captured; the capture is replayed if
the import fails, so a real problem is never hidden. Modules that use TensorFlow import this first.
"""

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_quietly() -> None:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.constant(0.0)  # the device probe happens at the first op
            tf.get_logger().setLevel("ERROR")  # retracing notices: the population engine traces once per architecture
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# keras-tuner imports Keras, which imports its backend: TensorFlow unless KERAS_BACKEND names another (on a machine
# with JAX but no TensorFlow, KERAS_BACKEND=jax runs the search driver and the population engine).
if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    _import_quietly()
