"""Engines run trials. Every engine takes `Trial`s and returns `TrialResult`s in the one results schema."""

from __future__ import annotations

import os

from study.engines.base import Engine
from study.errors import StudyError

ENGINES = ("population", "keras")


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
