"""Engines run trials. Every engine takes `Trial`s and returns `TrialResult`s in the one results schema."""

from __future__ import annotations

from study.engines.base import Engine
from study.errors import StudyError

ENGINES = ("population", "keras")


def get_engine(name: str) -> Engine:
    """The engine called `name`; imported lazily because engines import TensorFlow."""
    if name == "keras":
        from study.engines.keras_engine import KerasEngine

        return KerasEngine()
    if name == "population":
        from study.engines.population import PopulationEngine

        return PopulationEngine()
    raise StudyError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}")
