"""Every model family trains on every CPU, on both engines: with TensorFlow's oneDNN kernels on and off.

TensorFlow turns oneDNN on only on some CPUs (with AVX-512, say), and its other kernel path lacks some operations
(a grouped convolution's gradient, once used by the population engine, was one); the keras engine runs on
TensorFlow and the population engine on XLA, which must not care. Each mode runs in a process of its own, because
the choice is made once, when TensorFlow loads.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from conftest import PYTHON, ROOT

# A CNN (batch norm, every dropout kind) and an RNN (input, recurrent and output dropout): two trials of each on the
# population engine and one on the keras engine, three minibatches; prints oneDNN's state and the final metrics.
SCRIPT = """
import json, sys
sys.path.insert(0, "tests")
from conftest import tiny_space_dict
from study.engines import get_engine, population
from study.engines.base import split_for
from study.machine import onednn_enabled
from study.space import parse_space

cases = {
    "cnn": ({"family": "cnn", "filters": [4, 8], "hidden_units": [8]},
            {"batch_norm": [True], "spatial_dropout": [0.2], "conv_dropout": [0.1], "pool_dropout": [0.2],
             "dropout_rate": [0.3], "input_dropout": [0.1]}),
    "rnn": ({"family": "rnn", "hidden_units": [8]},
            {"lstm_dropout": [0.2], "recurrent_dropout": [0.3], "dropout_rate": [0.2], "max_norm": [1.0]}),
}
out = {"onednn": onednn_enabled()}
for family, (model, axes) in cases.items():
    space = parse_space(tiny_space_dict(dataset={"name": "digits", "split": {"train_size": 96}}, model=model,
                                        axes=axes, training={"epochs": 1, "batch_size": 32}))
    trials = space.trials()
    out[family] = population.train_population(trials, [split_for(t) for t in trials]).final[:, :4].tolist()
    rows = get_engine("keras").run_all(trials[:1])
    assert all(r.ok for r in rows), [r.row["error"] for r in rows]
    out[f"{family}-keras"] = [[r.row[m] for m in population.METRICS[:4]] for r in rows]  # no validation rows
print(json.dumps(out))
"""


def _start(onednn: str) -> subprocess.Popen:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
    return subprocess.Popen([PYTHON, "-c", SCRIPT], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


@pytest.fixture(scope="module")
def both_modes() -> dict[str, dict]:
    out = {}
    for mode in ("0", "1"):  # one after the other: the second loads the first's compiled programs from the cache
        proc = _start(mode)
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"TF_ENABLE_ONEDNN_OPTS={mode}: training failed:\n{stderr[-3000:]}"
        out[mode] = json.loads(stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("family", ["cnn", "rnn", "cnn-keras", "rnn-keras"])
def test_cnn_and_rnn_train_with_onednn_on_and_off_alike(both_modes, family: str) -> None:
    off, on = both_modes["0"], both_modes["1"]
    assert off["onednn"] is False, "TF_ENABLE_ONEDNN_OPTS=0 should turn oneDNN off"
    off_metrics, on_metrics = np.array(off[family]), np.array(on[family])
    assert np.isfinite(off_metrics).all() and np.isfinite(on_metrics).all()
    # Two kernel libraries round differently; after an epoch the metrics agree far closer than this.
    np.testing.assert_allclose(off_metrics, on_metrics, atol=1e-3)
