"""Search-space files: the YAML schema, its validation, and the trials a study consists of.

Everything a user can get wrong is checked here, before any training starts, and reported as one line per
problem naming the field, the bad value and what is allowed (see `load_space`).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from study.datasets import DATASETS, allowed_params
from study.errors import StudyError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish", "softplus", "linear")

# The grid axes, in the order they are enumerated and stored.
AXES = (
    "dropout_rate",
    "input_dropout",
    "conv_dropout",
    "pool_dropout",
    "spatial_dropout",
    "lstm_dropout",
    "recurrent_dropout",
    "max_norm",
    "l2",
    "batch_norm",
    "hidden_units",
    "early_stopping",
)
RATE_AXES = AXES[:7]

# Model families and the axes that apply to each (an axis that does not apply stays off and is not stored).
FAMILIES = ("mlp", "cnn", "rnn")
_SHARED = ("dropout_rate", "input_dropout", "max_norm", "l2", "hidden_units", "early_stopping")
FAMILY_AXES = {
    "mlp": (*_SHARED, "batch_norm"),
    "cnn": (*_SHARED, "batch_norm", "conv_dropout", "pool_dropout", "spatial_dropout"),
    "rnn": (*_SHARED, "lstm_dropout", "recurrent_dropout"),
}
FAMILY_AXES = {family: tuple(a for a in AXES if a in axes) for family, axes in FAMILY_AXES.items()}
DEFAULT_FILTERS = [16, 32]
DEFAULT_ACTIVATION = {"mlp": "relu", "cnn": "relu", "rnn": "tanh"}

# Fields added after results existed; left out of hashes while unset, so existing results keep their keys.
_ADDED_AXES = ("conv_dropout", "pool_dropout", "spatial_dropout", "lstm_dropout", "recurrent_dropout")
_ADDED_MODEL_FIELDS = ("filters",)


def _rate(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError("a rate must be in [0, 1): it is the fraction of units zeroed, as in Keras' Dropout(rate)")
    return value


def _max_norm(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ValueError("a max-norm must be positive (or null for no constraint)")
    return value


def _l2(value: float) -> float:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError("an L2 strength must be a finite number >= 0")
    return value


Rate = Annotated[float, AfterValidator(_rate)]
MaxNorm = Annotated[float | None, AfterValidator(_max_norm)]
L2 = Annotated[float, AfterValidator(_l2)]
Width = Annotated[int, Field(gt=0)]


def _widths(value: Any) -> Any:
    """A layer-width list; a single integer means one value for every hidden layer."""
    if isinstance(value, bool) or not isinstance(value, int | list):
        raise ValueError("must be a positive integer or a list of positive integers, e.g. 500 or [128, 64]")
    widths = value if isinstance(value, list) else [value]
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in widths):
        raise ValueError("must be a positive integer or a non-empty list of positive integers, e.g. [128, 64]")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SplitSpec(_Strict):
    """How rows are split into train and test. The default is the reference: by position, no shuffling."""

    train_size: Annotated[int, Field(gt=0)] | Annotated[float, Field(gt=0, lt=1)] | None = None
    shuffle: bool = False
    split_seed: Annotated[int, Field(ge=0)] = 0
    per_seed: bool = False  # redraw the split with each trial's seed (measures data-split variance too)


class DatasetSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    split: SplitSpec = SplitSpec()
    standardize: bool = False

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset{_suggest(name, DATASETS)}; known: {', '.join(DATASETS)}")
        return name

    @model_validator(mode="after")
    def _known_params(self) -> DatasetSpec:
        allowed = allowed_params(self.name)
        unknown = [p for p in self.params if p not in allowed]
        if unknown:
            raise ValueError(
                f"unknown parameter {unknown[0]!r} for dataset {self.name!r}{_suggest(unknown[0], allowed)}; "
                f"allowed: {', '.join(allowed) or 'none'}"
            )
        return self


class ModelSpec(_Strict):
    """The network. `hidden_units` are the MLP's hidden layers, the CNN's dense head, or the RNN's LSTM units.

    `filters` (cnn only) gives one Conv2D(3x3, same padding) + MaxPooling2D(2) block per entry.
    `activation` is that of the hidden Dense and Conv2D layers, or the LSTM's cell activation (default tanh).
    """

    family: str = "mlp"
    hidden_units: list[Width] = Field(default_factory=lambda: [500], min_length=1)
    filters: list[Width] | None = None
    activation: str = "relu"

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        family = raw.get("family", "mlp")
        if family in FAMILIES:
            raw = {"activation": DEFAULT_ACTIVATION[family], **raw}
        if family == "cnn":
            raw = {"filters": DEFAULT_FILTERS, **raw}
        return raw

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        if family not in FAMILIES:
            raise ValueError(f"unknown model family{_suggest(family, FAMILIES)}; known: {', '.join(FAMILIES)}")
        return family

    @model_validator(mode="after")
    def _fits_family(self) -> ModelSpec:
        if self.filters is not None and self.family != "cnn":
            raise ValueError(f"filters applies to model family cnn only (this model is {self.family})")
        if self.family == "rnn" and len(self.hidden_units) != 1:
            raise ValueError("an rnn has one LSTM layer: hidden_units must hold one width, e.g. [32]")
        return self

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, activation: str) -> str:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation{_suggest(activation, ACTIVATIONS)}; known: {', '.join(ACTIVATIONS)}")
        return activation


class OptimizerSpec(_Strict):
    """Adam with the Keras 3 defaults."""

    name: Literal["adam"] = "adam"
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    beta_1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta_2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    epsilon: Annotated[float, Field(gt=0)] = 1e-7


class EarlyStoppingSpec(_Strict):
    """Keras' EarlyStopping; `enabled` is the default when the `early_stopping` axis is not swept."""

    enabled: bool = True
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: Annotated[int, Field(ge=0)] = 100
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    restore_best_weights: bool = True


class TrainingSpec(_Strict):
    epochs: Annotated[int, Field(gt=0)]
    batch_size: Annotated[int, Field(gt=0)] = 32
    optimizer: OptimizerSpec = OptimizerSpec()
    early_stopping: EarlyStoppingSpec | None = None


class AxesSpec(_Strict):
    """The grid: each axis is a non-empty list of distinct values; an axis left out stays at its 'off' value."""

    dropout_rate: list[Rate] | None = None
    input_dropout: list[Rate] | None = None
    conv_dropout: list[Rate] | None = None
    pool_dropout: list[Rate] | None = None
    spatial_dropout: list[Rate] | None = None
    lstm_dropout: list[Rate] | None = None
    recurrent_dropout: list[Rate] | None = None
    max_norm: list[MaxNorm] | None = None
    l2: list[L2] | None = None
    batch_norm: list[bool] | None = None
    hidden_units: list[Annotated[Any, AfterValidator(_widths)]] | None = None
    early_stopping: list[bool] | None = None

    @field_validator("*")
    @classmethod
    def _non_empty_and_distinct(cls, values: list[Any] | None) -> list[Any] | None:
        if values is None:
            return None
        if not values:
            raise ValueError("an axis needs at least one value (leave the axis out to keep it at its default)")
        seen: list[Any] = []
        for value in values:
            if value in seen and type(value) is type(seen[seen.index(value)]):
                raise ValueError(f"duplicate value {value!r}: each value may appear once")
            seen.append(value)
        return values


class SearchSpace(_Strict):
    """One study: data, model, training, the grid axes and the seeds. Every (configuration, seed) is a trial."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)]
    description: str = ""
    dataset: DatasetSpec
    model: ModelSpec = ModelSpec()
    training: TrainingSpec
    axes: AxesSpec = AxesSpec()
    seeds: list[int]

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_list(cls, seeds: Any) -> list[int]:
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if seeds <= 0:
                raise ValueError("a seed count must be a positive integer")
            return list(range(seeds))
        if not isinstance(seeds, list) or not seeds:
            raise ValueError("seeds must be a positive count (e.g. 30) or a non-empty list of integers")
        bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if bad:
            raise ValueError(f"seeds must be non-negative integers; {bad[0]!r} is not")
        if len(set(seeds)) != len(seeds):
            dup = next(s for s in seeds if seeds.count(s) > 1)
            raise ValueError(f"duplicate seed {dup}: each seed may appear once")
        return seeds

    @model_validator(mode="after")
    def _axes_fit_the_model(self) -> SearchSpace:
        family = self.model.family
        for axis in AXES:
            if getattr(self.axes, axis) is not None and axis not in FAMILY_AXES[family]:
                users = [f for f in FAMILIES if axis in FAMILY_AXES[f]]
                raise ValueError(
                    f"axes.{axis} does not apply to model family {family} (it applies to {', '.join(users)}); "
                    f"axes for {family}: {', '.join(FAMILY_AXES[family])}"
                )
        if family != "mlp" and DATASETS[self.dataset.name].image_shape is None:
            images = [name for name, info in DATASETS.items() if info.image_shape]
            raise ValueError(
                f"model family {family} needs an image dataset ({', '.join(images)}); {self.dataset.name} has none"
            )
        if family == "rnn" and any(len(w) != 1 for w in self.axis_values()["hidden_units"]):
            raise ValueError("an rnn has one LSTM layer: each axes.hidden_units value must be one width, e.g. 32")
        return self

    @model_validator(mode="after")
    def _early_stopping_configured(self) -> SearchSpace:
        if self.axes.early_stopping and True in self.axes.early_stopping and self.training.early_stopping is None:
            raise ValueError(
                "axes.early_stopping includes true but training.early_stopping is not set: "
                "add e.g. `early_stopping: {patience: 100}` under training"
            )
        return self

    # --- the grid -----------------------------------------------------------------------------------

    def axis_values(self) -> dict[str, list[Any]]:
        """Every axis with the values it takes in this study (an axis not swept has its one default value)."""
        swept = self.swept_axes()
        return {axis: swept.get(axis, [self.default_value(axis)]) for axis in AXES}

    def swept_axes(self) -> dict[str, list[Any]]:
        """The axes the file sweeps, normalised (widths as tuples), in file order."""
        out: dict[str, list[Any]] = {}
        for axis in AXES:
            values = getattr(self.axes, axis)
            if values is not None:
                out[axis] = [self._normalise(axis, v) for v in values]
        return out

    def default_value(self, axis: str) -> Any:
        defaults = {
            **dict.fromkeys(RATE_AXES, 0.0),
            "max_norm": None,
            "l2": 0.0,
            "batch_norm": False,
            "hidden_units": tuple(self.model.hidden_units),
            "early_stopping": bool(self.training.early_stopping and self.training.early_stopping.enabled),
        }
        return defaults[axis]

    def _normalise(self, axis: str, value: Any) -> Any:
        if axis == "hidden_units":
            return tuple(value) if isinstance(value, list) else (value,) * len(self.model.hidden_units)
        if axis in RATE_AXES or axis == "l2" or (axis == "max_norm" and value is not None):
            return float(value)
        return value

    def configurations(self) -> list[dict[str, Any]]:
        """The full factorial grid, first axis slowest, as dicts over every axis in `AXES`."""
        values = self.axis_values()
        return [dict(zip(AXES, combo, strict=True)) for combo in itertools.product(*values.values())]

    def trials(self) -> list[Trial]:
        """Every (configuration, seed) pair, seeds outermost: an interrupted study has whole seeds done."""
        configs = self.configurations()
        return [Trial(self, config, seed) for seed in self.seeds for config in configs]

    @property
    def n_trials(self) -> int:
        return math.prod(len(v) for v in self.axis_values().values()) * len(self.seeds)

    @property
    def applicable_axes(self) -> tuple[str, ...]:
        """The axes that mean something for this study's model family."""
        return FAMILY_AXES[self.model.family]

    def definition(self, include: set[str] | None = None, exclude: set[str] | None = None) -> dict[str, Any]:
        """The space as JSON-able data for hashing; fields added later are left out while unset."""
        dump = self.model_dump(mode="json", include=include, exclude=exclude)
        for section, fields in (("axes", _ADDED_AXES), ("model", _ADDED_MODEL_FIELDS)):
            for name in fields:
                if name in dump.get(section, {}) and dump[section][name] is None:
                    del dump[section][name]
        return dump

    def fingerprint(self) -> str:
        """A hash of everything that defines the study's trials (the description is left out)."""
        return _hash(self.definition(exclude={"description"}))


@dataclass(frozen=True)
class Trial:
    """One (configuration, seed) pair: the unit every engine runs and the store records."""

    space: SearchSpace
    config: dict[str, Any]
    seed: int

    @cached_property
    def config_key(self) -> str:
        """Identifies the configuration (all seeds of it share the key); stable across runs and machines."""
        definition = self.space.definition(include={"dataset", "model", "training"})
        config = {axis: self.config[axis] for axis in self.space.applicable_axes}
        return _hash({**definition, "config": _jsonable(config)})[:12]

    @property
    def key(self) -> str:
        """Identifies the trial; a rerun or another worker computes the same key."""
        return f"{self.config_key}-s{self.seed}"

    @property
    def early_stopping(self) -> EarlyStoppingSpec | None:
        """The early-stopping settings in force for this trial, or None."""
        if not self.config["early_stopping"]:
            return None
        return self.space.training.early_stopping or EarlyStoppingSpec()


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- loading and error messages ------------------------------------------------------------------------

_SECTION_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): SearchSpace,
    ("dataset",): DatasetSpec,
    ("dataset", "split"): SplitSpec,
    ("model",): ModelSpec,
    ("training",): TrainingSpec,
    ("training", "optimizer"): OptimizerSpec,
    ("training", "early_stopping"): EarlyStoppingSpec,
    ("axes",): AxesSpec,
}


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space file; raise StudyError listing every problem, one per line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise StudyError(f"cannot read search space {path}: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise StudyError(f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{path} must be a YAML mapping with keys name, dataset, training, axes, seeds")
    return parse_space(raw, source=str(path))


def parse_space(raw: dict[str, Any], source: str = "search space") -> SearchSpace:
    """Validate an already-parsed mapping (what `load_space` does after reading YAML)."""
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as exc:
        problems = _messages(exc)
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        raise StudyError(f"{source} is not a valid search space ({len(problems)} {noun}):\n{lines}") from None


def _messages(exc: ValidationError) -> list[str]:
    messages: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # pydantic reports each failed branch of a union; the branch tag is noise to a user.
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in {"int", "float", "none"})))
        field = _format_loc(loc)
        if err["type"] == "extra_forbidden":
            parent, key = loc[:-1], str(loc[-1])
            allowed = list(_SECTION_MODELS.get(tuple(str(p) for p in parent), SearchSpace).model_fields)
            where = f" in {_format_loc(parent)}" if parent else ""
            msg = f"unknown key {key!r}{where}{_suggest(key, allowed)}; allowed: {', '.join(allowed)}"
        elif err["type"] == "missing":
            msg = f"{field}: required but missing"
        else:
            text = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            shown = f" = {value!r}" if not isinstance(value, dict | list) else ""
            msg = f"{field}{shown}: {text}"
        if msg not in messages:
            messages.append(msg)
    return messages


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
