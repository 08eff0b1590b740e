"""Engines run trials. Every engine takes `Trial`s and returns `TrialResult`s in the one results schema."""

from __future__ import annotations

import os

from study.engines.base import Engine
from study.errors import StudyError

ENGINES = ("population", "keras")


def choose_keras_backend(engine: str) -> None:
    """keras-tuner (the Oracle) imports Keras, and Keras imports its backend. Only the keras engine needs TensorFlow;
    for the others Keras loads on JAX, which the population engine imports anyway: seconds less at every start.
    Call it before anything imports Keras (once Keras is loaded its backend is fixed for the process)."""
    import sys

    if engine != "keras" and "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"


def get_engine(name: str, trials_per_batch: int | None = None) -> Engine:
    """The engine called `name`; imported lazily because engines import TensorFlow.

    `trials_per_batch` overrides the population engine's automatic choice (ignored by `keras`).
    """
    if name == "keras":
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        if backend != "tensorflow":
            raise StudyError(
                f"the keras engine is plain TensorFlow Keras, the reference; KERAS_BACKEND={backend!r} would swap its "
                "backend: unset KERAS_BACKEND"
            )
        from study.engines.keras_engine import KerasEngine

        return KerasEngine()
    if name == "population":
        from study.engines.population import PopulationEngine

        return PopulationEngine(trials_per_batch)
    raise StudyError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}")
