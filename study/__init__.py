"""dropout-study: grid studies of dropout and related regularisers, over many seeds.

Data flows one way: search space -> oracle -> engine -> store -> analysis; the CLI wires them.
"""

import os

# TensorFlow's C++ start-up chatter drowns the progress bar; users can still opt back in.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
