"""dropout-study: grid studies of dropout and related regularisers, over many seeds.

Data flows one way: search space -> oracle -> engine -> store -> analysis; the CLI wires them.
"""

import os

# TensorFlow's C++ start-up chatter drowns the progress bar; users can still opt back in.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

__all__ = ["Study", "load", "run"]


def __getattr__(name: str):
    """`study.run`, `study.load` and `study.Study` (api.py), imported on first use: `import study` stays light."""
    if name in __all__:
        from study import api

        return getattr(api, name)
    raise AttributeError(f"module 'study' has no attribute {name!r}")
