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
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from study.axes import (
    ADDED_AXES,
    AXES,
    AXIS,
    FAMILIES,
    FAMILY_AXES,
    MAX_EPOCHS,
    MAX_FLOAT_SETTING,
    MAX_LAYERS,
    MAX_WIDTH,
    REGISTRY,
    TRAINING_AXES,
    BatchSize,
    Epochs,
    LearningRate,
)
from study.datasets import DATASETS, NO_VALUE, DataError, allowed_params, check_params, split_of
from study.errors import StudyError, shown
from study.yaml_file import parse_value, read_yaml

ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish", "softplus", "linear")
DEFAULT_FILTERS = [16, 32]
DEFAULT_ACTIVATION = {"mlp": "relu", "cnn": "relu", "rnn": "tanh", "custom": "relu"}

# Upper bounds, so that no search space can make the driver allocate or loop without bound: far above any study a
# CPU (or a cluster) finishes, and each refused with a message that names it. The dataset's own are in datasets.py,
# the axes' in axes.py.
MAX_SEEDS = 10_000  # a seed count, or the length of a seed list
MAX_SEED = 2**32 - 1  # seeds are 32-bit: Keras' set_random_seed and the engines' mask hash take no more
MAX_TRIALS = 1_000_000
MAX_PARAMETERS = 50_000_000  # weights of one trial's model (200 MB as float32)
# Training runs in float32: settings beyond these overflow it or round to a value that means something else.
MAX_BETA = 0.99999
MAX_MC_SAMPLES = 1000  # Monte Carlo dropout passes at the end of training

# Fields added after results existed, as (path, value when unset): left out of hashes while unset, so existing
# results keep their keys.
_ADDED_FIELDS = (
    *((("axes", axis), None) for axis in ADDED_AXES),
    (("model", "filters"), None),
    (("model", "build"), None),
    (("dataset", "split", "validation_size"), None),
    (("dataset", "redraw_data"), False),
    (("dataset", "split", "stratify"), False),
    *(
        (("dataset", field), None)
        for field in ("file", "target", "features", "categorical", "impute", "test_file", "task")
    ),
    (("nuisance",), []),
    (("evaluation",), {"mc_samples": 0}),
)

Width = Annotated[int, Field(gt=0, le=MAX_WIDTH)]


def _train_size(value: Any) -> Any:
    """Rows (a positive integer) or a fraction of the rows (strictly between 0 and 1)."""
    rows = isinstance(value, int) and not isinstance(value, bool) and value > 0
    fraction = isinstance(value, float) and 0 < value < 1
    if value is not None and not (rows or fraction):
        raise ValueError("must be a number of rows (a positive integer) or a fraction between 0 and 1, e.g. 0.5")
    return value


def _name(value: Any) -> Any:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}", value):
        raise ValueError(
            "must be 1 to 80 letters, digits, '_', '.' or '-', starting with a letter or digit (it names a folder)"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class SplitSpec(_Strict):
    """How rows are split into train, validation and test. The default is the reference: train and test by
    position, no shuffling, no validation rows (early stopping then watches the test set, as the tutorial does)."""

    train_size: Annotated[int | float | None, BeforeValidator(_train_size)] = None
    shuffle: bool = False
    split_seed: Annotated[int, Field(ge=0)] = 0
    per_seed: bool = False  # redraw the split with each trial's seed (measures data-split variance too)
    # Rows (or a fraction of the training rows) held out of training for early stopping and model selection.
    validation_size: Annotated[int | float | None, BeforeValidator(_train_size)] = None
    stratify: bool = False  # keep the class proportions in every part (shuffled splits)


class DatasetSpec(_Strict):
    """A built-in dataset (`name`, `params`) or the user's own file (`file`, `target`, ...; see data_files.py)."""

    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    split: SplitSpec = SplitSpec()
    standardize: bool = False
    redraw_data: bool = False  # the generator's random_state is each trial's seed: a new draw of the data per seed
    file: str | None = None  # CSV, Parquet or .npz, relative to the search-space file
    target: str | None = None  # the label column (default for an .npz: its y)
    features: list[str] | None = Field(default=None, min_length=1, max_length=100_000)
    categorical: list[str] | None = None  # columns to one-hot encode besides the non-numeric ones
    impute: Literal["median", "most_frequent"] | None = None
    test_file: str | None = None  # a held-out test set of the same columns (then every row of `file` trains)
    task: Literal["classification", "regression"] | None = None  # default: the dataset's, or inferred from a file
    _root: Path = PrivateAttr(default_factory=Path.cwd)  # the folder relative paths start from
    _digests: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _files_shuffle_by_default(cls, raw: Any) -> Any:
        """A file's rows may be in any order (sorted by class, often): its split is shuffled unless said otherwise."""
        if isinstance(raw, dict) and raw.get("file") is not None and isinstance(raw.get("split", {}), dict):
            raw = {**raw, "split": {"shuffle": True, **raw.get("split", {})}}
        return raw

    @model_validator(mode="after")
    def _name_or_file(self) -> DatasetSpec:
        if (self.name is None) == (self.file is None):
            raise ValueError(
                "dataset needs either `name` (a built-in dataset: " + ", ".join(DATASETS) + ") or `file` (a CSV, "
                "Parquet or .npz file with a `target` column), not both"
            )
        file_only = ("target", "features", "categorical", "impute", "test_file")
        if self.file is None and any(getattr(self, f) is not None for f in file_only):
            given = next(f for f in file_only if getattr(self, f) is not None)
            raise ValueError(f"dataset.{given} applies to data from a `file` only")
        if self.file is not None and (self.params or self.redraw_data):
            raise ValueError("dataset.params and redraw_data apply to built-in datasets, not to a `file`")
        if self.test_file is not None and self.split.train_size is not None:
            raise ValueError("dataset.split.train_size and test_file exclude each other: with a test_file every row "
                             "of `file` trains (less validation_size)")  # fmt: skip
        if self.split.stratify and not (self.split.shuffle or self.split.per_seed or self.test_file):
            raise ValueError("dataset.split.stratify needs shuffle: true (a split by position keeps the file's order)")
        return self

    @property
    def label(self) -> str:
        """What trials.csv's `dataset` column says: the built-in name, or the file's name."""
        return self.name if self.name is not None else Path(self.file).name

    def path(self, field: str = "file") -> Path:
        return self._root / getattr(self, field)

    def digest(self, field: str = "file") -> str:
        """The SHA-256 of the data file (raises DataError when it cannot be read)."""
        from study.data_files import file_digest

        if field not in self._digests:
            self._digests[field] = file_digest(self.path(field), field, getattr(self, field))
        return self._digests[field]

    def source(self) -> dict[str, Any]:
        """The section as JSON data, with files resolved and their digests: what makes the data (and keys a cache)."""
        data = self.model_dump(mode="json")
        for field, key in (("file", "path"), ("test_file", "test_path")):
            if getattr(self, field) is not None:
                data[key], data[f"{field}_sha256"] = str(self.path(field)), self.digest(field)
        return data

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str | None) -> str | None:
        if name is not None and name not in DATASETS:
            raise ValueError(f"unknown dataset{_suggest(name, DATASETS)}; known: {', '.join(DATASETS)}")
        return name

    @model_validator(mode="after")
    def _task_of_a_built_in_dataset(self) -> DatasetSpec:
        if self.name is not None and self.task is not None and self.task != DATASETS[self.name].task:
            raise ValueError(
                f"dataset.task: {self.name} is a {DATASETS[self.name].task} dataset; leave task out (it is only "
                "needed for a file whose target could be read either way)"
            )
        return self

    @model_validator(mode="after")
    def _redraw_needs_a_generator(self) -> DatasetSpec:
        if self.name is None:
            return self
        if self.redraw_data and "random_state" not in allowed_params(self.name):
            drawn = [n for n in DATASETS if "random_state" in allowed_params(n)]
            raise ValueError(
                f"dataset.redraw_data: {self.name} is a fixed dataset, not drawn from a generator; redraw_data "
                f"applies to {', '.join(drawn)}"
            )
        if self.redraw_data and "random_state" in self.params:
            raise ValueError("dataset.redraw_data replaces params.random_state with each seed: remove one of them")
        return self

    @model_validator(mode="after")
    def _known_params(self) -> DatasetSpec:
        if self.name is None:
            return self
        allowed = allowed_params(self.name)
        unknown = [p for p in self.params if p not in allowed]
        if unknown:
            hint = _suggest(unknown[0][:100], allowed)
            raise ValueError(
                f"unknown parameter {shown(unknown[0])} for dataset {self.name!r}{hint}; "
                f"allowed: {', '.join(allowed) or 'none'}"
            )
        return self


class ModelSpec(_Strict):
    """The network. `hidden_units` are the MLP's hidden layers, the CNN's dense head, or the RNN's LSTM units.

    `filters` (cnn only) gives one Conv2D(3x3, same padding) + MaxPooling2D(2) block per entry.
    `activation` is that of the hidden Dense and Conv2D layers, or the LSTM's cell activation (default tanh).
    `build` (family custom only) is the user's keras-tuner-style build(hp) as 'module:function' (study/custom_model.py).
    """

    family: str = "mlp"
    hidden_units: list[Width] = Field(default_factory=lambda: [500], min_length=1, max_length=MAX_LAYERS)
    filters: list[Width] | None = Field(default=None, min_length=1, max_length=MAX_LAYERS)
    activation: str = "relu"
    build: str | None = None  # 'module:function', the module a Python file relative to the search-space file
    _root: Path = PrivateAttr(default_factory=Path.cwd)  # the folder `build`'s module path starts from
    _digest: str | None = PrivateAttr(default=None)  # the SHA-256 of `build`'s module file, once read

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
        if self.family == "cnn" and not self.filters:
            raise ValueError("a cnn needs model.filters: one entry per Conv2D block, e.g. [16, 32]")
        if self.family == "rnn" and len(self.hidden_units) != 1:
            raise ValueError("an rnn has one LSTM layer: hidden_units must hold one width, e.g. [32]")
        if self.build is not None and self.family != "custom":
            raise ValueError(f"model.build applies to model family custom only (this model is {self.family})")
        if self.family == "custom" and self.build is None:
            raise ValueError(
                "model family custom needs model.build: 'module:function', e.g. my_models:build for a build(hp) "
                "function in my_models.py next to the search-space file"
            )
        return self

    @field_validator("build")
    @classmethod
    def _module_and_function(cls, build: str | None) -> str | None:
        pattern = r"[A-Za-z_]\w{0,99}(\.[A-Za-z_]\w{0,99}){0,9}:[A-Za-z_]\w{0,99}"  # my_models:build, pkg.nets:build
        if build is not None and not re.fullmatch(pattern, build):
            raise ValueError("must be 'module:function', e.g. my_models:build for build(hp) in my_models.py")
        return build

    def parameter_count(
        self, hidden_units: tuple[int, ...], n_features: int, n_outputs: int, image_shape: tuple[int, int] | None
    ) -> int:
        """Weights of the Keras model (kernels, biases, batch-norm vectors left out): bounds a trial's memory."""
        if self.family == "custom":  # the user's model: counted once built (the keras engine's check)
            return 0
        head_in = n_features
        count = 0
        if self.family == "cnn":
            channels, (h, w) = 1, image_shape
            for f in self.filters:
                count += 9 * channels * f + f
                channels, h, w = f, h // 2, w // 2
            head_in = h * w * channels
        if self.family == "rnn":
            u, steps_in = hidden_units[0], image_shape[1]
            return 4 * u * (steps_in + u + 1) + u * n_outputs + n_outputs
        widths = (head_in, *hidden_units, n_outputs)
        return count + sum(a * b + b for a, b in itertools.pairwise(widths))

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, activation: str) -> str:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation{_suggest(activation, ACTIVATIONS)}; known: {', '.join(ACTIVATIONS)}")
        return activation


class OptimizerSpec(_Strict):
    """Adam with the Keras 3 defaults."""

    name: Literal["adam"] = "adam"
    learning_rate: LearningRate = 1e-3
    beta_1: Annotated[float, Field(ge=0, le=MAX_BETA)] = 0.9
    beta_2: Annotated[float, Field(ge=0, le=MAX_BETA)] = 0.999
    epsilon: Annotated[float, Field(gt=0, le=1)] = 1e-7


class EarlyStoppingSpec(_Strict):
    """Keras' EarlyStopping; `enabled` is the default when the `early_stopping` axis is not swept."""

    enabled: bool = True
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 100
    min_delta: Annotated[float, Field(ge=0, le=MAX_FLOAT_SETTING)] = 0.0
    restore_best_weights: bool = True


class EvaluationSpec(_Strict):
    """What is measured on the final model besides the metrics Keras reports. `mc_samples` > 0: Monte Carlo
    dropout -- that many stochastic forward passes with every dropout active and batch norm in inference mode,
    their probabilities averaged (Gal & Ghahramani 2016); 0 (the default) skips it."""

    mc_samples: Annotated[int, Field(ge=0, le=MAX_MC_SAMPLES)] = 0


class TrainingSpec(_Strict):
    epochs: Epochs
    batch_size: BatchSize = 32
    optimizer: OptimizerSpec = OptimizerSpec()
    early_stopping: EarlyStoppingSpec | None = None


class _AxesBase(_Strict):
    """The grid: each axis is a non-empty list of distinct values; an axis left out stays at its default value.

    One optional field per axis of the registry (`study.axes`), made by `create_model` below."""

    @field_validator("*")
    @classmethod
    def _non_empty_and_distinct(cls, values: list[Any] | None) -> list[Any] | None:
        if values is None:
            return None
        if not values:
            raise ValueError("an axis needs at least one value (leave the axis out to keep it at its default)")
        seen: set[str] = set()
        for value in values:
            key = f"{type(value).__name__}:{json.dumps(value)}"
            if key in seen:
                raise ValueError(f"duplicate value {shown(value)}: each value may appear once")
            seen.add(key)
        return values


AxesSpec = create_model(
    "AxesSpec", __base__=_AxesBase, **{axis.name: (list[axis.value_type] | None, None) for axis in REGISTRY}
)


class SearchSpace(_Strict):
    """One study: data, model, training, the grid axes and the seeds. Every (configuration, seed) is a trial."""

    name: Annotated[str, BeforeValidator(_name)]
    description: str = ""
    dataset: DatasetSpec
    model: ModelSpec = ModelSpec()
    training: TrainingSpec
    axes: AxesSpec = AxesSpec()
    nuisance: list[str] = Field(default_factory=list)
    evaluation: EvaluationSpec = EvaluationSpec()
    seeds: list[int]

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_list(cls, seeds: Any) -> list[int]:
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if seeds <= 0:
                raise ValueError("a seed count must be a positive integer")
            if seeds > MAX_SEEDS:
                raise ValueError(f"at most {MAX_SEEDS:,} seeds per study (a few tens resolve most differences)")
            return list(range(seeds))
        if not isinstance(seeds, list) or not seeds:
            raise ValueError("seeds must be a positive count (e.g. 30) or a non-empty list of integers")
        if len(seeds) > MAX_SEEDS:
            raise ValueError(f"{len(seeds):,} seeds listed; at most {MAX_SEEDS:,} per study")
        bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"seeds must be integers from 0 to {MAX_SEED} (32-bit); {shown(bad[0])} is not")
        seen: set[int] = set()
        for seed in seeds:
            if seed in seen:
                raise ValueError(f"duplicate seed {seed}: each seed may appear once")
            seen.add(seed)
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
        image = DATASETS[self.dataset.name].image_shape if self.dataset.name else None
        if family in ("cnn", "rnn") and image is None:
            images = [name for name, info in DATASETS.items() if info.image_shape]
            raise ValueError(
                f"model family {family} needs an image dataset ({', '.join(images)}); {self.dataset.label} has none"
            )
        if family == "rnn" and any(len(w) != 1 for w in self.axis_values()["hidden_units"]):
            raise ValueError("an rnn has one LSTM layer: each axes.hidden_units value must be one width, e.g. 32")
        if family == "cnn" and image and min(image) >> len(self.model.filters) == 0:
            most = min(image).bit_length() - 1
            raise ValueError(
                f"model.filters: {len(self.model.filters)} conv blocks pool the {image[0]}x{image[1]} image below one "
                f"pixel (each MaxPooling2D(2) halves it); use at most {most} entries"
            )
        return self

    @model_validator(mode="after")
    def _settings_are_distinct(self) -> SearchSpace:
        """Two values of an axis that mean the same setting (4 and [4] for a one-layer model, 0 and 0.0) would
        make two configurations with one key, and a study that never finishes."""
        for axis, values in self.swept_axes().items():
            for i, value in enumerate(values):
                if value in values[:i]:
                    first = getattr(self.axes, axis)[values.index(value)]
                    raise ValueError(
                        f"axes.{axis}: {shown(first)} and {shown(getattr(self.axes, axis)[i])} are the same "
                        "setting for this model; each setting may appear once"
                    )
        return self

    @model_validator(mode="after")
    def _nuisance_axes_are_swept_settings(self) -> SearchSpace:
        """A nuisance axis is a setting (not a regulariser) the grid sweeps, so there is a best value to take."""
        for i, name in enumerate(self.nuisance):
            if name not in AXIS:
                raise ValueError(f"nuisance[{i}]: unknown axis {shown(name)}{_suggest(name[:100], AXES)}")
            if AXIS[name].scientific:
                raise ValueError(
                    f"nuisance[{i}]: {name} is a regulariser, the question the study asks, not a nuisance; "
                    f"nuisance axes are settings such as {', '.join(a.name for a in REGISTRY if not a.scientific)}"
                )
            if len(self.axis_values()[name]) < 2:
                raise ValueError(
                    f"nuisance[{i}]: {name} must be swept (axes.{name} with at least two values) to be tuned"
                )
            if name in self.nuisance[:i]:
                raise ValueError(f"nuisance[{i}]: {name} is listed twice")
        return self

    @model_validator(mode="after")
    def _grid_is_bounded(self) -> SearchSpace:
        if self.n_trials > MAX_TRIALS:
            raise ValueError(
                f"the grid has {self.n_trials:,} trials ({self.n_configurations:,} configurations x "
                f"{len(self.seeds):,} seeds); at most {MAX_TRIALS:,} per study: sweep fewer values or split it"
            )
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
        return AXIS[axis].default(self)

    def _normalise(self, axis: str, value: Any) -> Any:
        return AXIS[axis].normalise(value, self)

    def configurations(self) -> list[dict[str, Any]]:
        """The full factorial grid, first axis slowest, as dicts over every axis in `AXES`."""
        values = self.axis_values()
        return [dict(zip(AXES, combo, strict=True)) for combo in itertools.product(*values.values())]

    def trials(self) -> list[Trial]:
        """Every (configuration, seed) pair, seeds outermost: an interrupted study has whole seeds done."""
        configs = self.configurations()
        return [Trial(self, config, seed) for seed in self.seeds for config in configs]

    @property
    def n_configurations(self) -> int:
        return math.prod(len(v) for v in self.axis_values().values())

    @property
    def n_trials(self) -> int:
        return self.n_configurations * len(self.seeds)

    def first_trial(self) -> Trial:
        """The grid's first trial, without enumerating the grid."""
        return Trial(self, {axis: values[0] for axis, values in self.axis_values().items()}, self.seeds[0])

    @property
    def applicable_axes(self) -> tuple[str, ...]:
        """The axes that mean something for this study's model family."""
        return FAMILY_AXES[self.model.family]

    @cached_property
    def keyed_axes(self) -> tuple[str, ...]:
        """The axes a configuration's key hashes: a training setting only where the grid sweeps it (otherwise it
        is part of the study's definition, and studies made before it was an axis keep their keys)."""
        swept = {a for a in AXES if getattr(self.axes, a) is not None}
        return tuple(a for a in self.applicable_axes if a not in TRAINING_AXES or a in swept)

    def definition(self, include: set[str] | None = None, exclude: set[str] | None = None) -> dict[str, Any]:
        """The space as JSON-able data for hashing; fields added later are left out while unset."""
        dump = self.model_dump(mode="json", include=include, exclude=exclude)
        if "model" in dump and self.model.build is not None:  # the build's module by its content, as a data file
            from study.custom_model import module_digest

            dump["model"]["build_sha256"] = module_digest(self.model)
        if "dataset" in dump:  # a data file is hashed by its content: a changed file is a different study
            for field in ("file", "test_file"):
                if getattr(self.dataset, field) is not None:
                    dump["dataset"][f"{field}_sha256"] = self.dataset.digest(field)
        for path, unset in _ADDED_FIELDS:
            *parents, name = path
            part = dump
            for parent in parents:
                part = part.get(parent, {})
            if name in part and part[name] == unset:
                del part[name]
        return dump

    def fingerprint(self) -> str:
        """A hash of everything that defines the study's trials (the description is left out)."""
        return _hash(self.definition(exclude={"description"}))

    def trial_definition(self) -> dict[str, Any]:
        """What gives a trial its meaning besides its axis values and seed: the dataset, model, training and
        evaluation (MC dropout) sections, and which training settings the grid sweeps (a swept one enters every
        config key). Two spaces with the same trial definition give a (configuration, seed) the same key, so one
        may grow into the other."""
        swept_training = [axis for axis in TRAINING_AXES if axis in self.keyed_axes]
        definition = self.definition(include={"dataset", "model", "training", "evaluation"})  # evaluation: if set
        return {**definition, "swept_training_axes": swept_training}

    def trial_fingerprint(self) -> str:
        """A hash of `trial_definition`: equal for spaces that differ only in their seeds and axis values."""
        return _hash(self.trial_definition())

    @cached_property
    def _trial_definition_json(self) -> str:
        """The JSON of what every trial's config key hashes besides its configuration, computed once."""
        return _canonical_json(self.definition(include={"dataset", "model", "training"}))


@dataclass(frozen=True)
class Trial:
    """One (configuration, seed) pair: the unit every engine runs and the store records."""

    space: SearchSpace
    config: dict[str, Any]
    seed: int

    @cached_property
    def config_key(self) -> str:
        """Identifies the configuration (all seeds of it share the key); stable across runs and machines.

        It is the hash of {"config": ..., **definition} as canonical JSON; "config" sorts before the definition's
        keys (dataset, model, training), so the text is assembled from the definition's JSON, made once."""
        config = {axis: self.config[axis] for axis in self.space.keyed_axes}
        text = '{"config":' + _canonical_json(_jsonable(config)) + "," + self.space._trial_definition_json[1:]
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def key(self) -> str:
        """Identifies the trial; a rerun or another worker computes the same key."""
        return f"{self.config_key}-s{self.seed}"

    @property
    def learning_rate(self) -> float:
        return self.config["learning_rate"]

    @property
    def epochs(self) -> int:
        return self.config["epochs"]

    @property
    def batch_size(self) -> int:
        return self.config["batch_size"]

    @property
    def early_stopping(self) -> EarlyStoppingSpec | None:
        """The early-stopping settings in force for this trial, or None."""
        if not self.config["early_stopping"]:
            return None
        return self.space.training.early_stopping or EarlyStoppingSpec()


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _hash(obj: Any) -> str:
    return hashlib.sha256(_canonical_json(obj).encode()).hexdigest()


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
    ("evaluation",): EvaluationSpec,
    ("axes",): AxesSpec,
}


def load_space(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> SearchSpace:
    """Read and validate a search-space file; raise StudyError listing every problem, one per line. A data file's
    path is relative to the search-space file. `overrides` ('training.epochs=1000', 'seeds=30') replace fields of
    the file before it is validated, so they are checked like the file."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise StudyError(f"{path} must be a YAML mapping with keys name, dataset, training, axes, seeds")
    for override in overrides:
        _override(raw, override)
    return parse_space(raw, source=str(path), root=Path(path).parent)


def default_engine(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> str:
    """The engine a study runs on when none is named: the population engine, or plain Keras for a custom model
    (which only it can build). Read from the file before it is validated (a bad file is refused right after)."""
    try:
        raw = read_yaml(path)
        if not isinstance(raw, dict):
            return "population"  # refused with its message when the file is loaded
        for override in overrides:
            _override(raw, override)
    except StudyError:
        return "population"
    model = raw.get("model") if isinstance(raw, dict) else None
    return "keras" if isinstance(model, dict) and model.get("family") == "custom" else "population"


def _override(raw: dict[str, Any], override: str) -> None:
    """Set one dotted field of the parsed file from 'field.path=value' (the value read as YAML)."""
    field, equals, text = override.partition("=")
    keys = field.strip().split(".")
    if not equals or not all(keys):
        raise StudyError(f"override {shown(override)} must be FIELD=VALUE, e.g. seeds=30 or training.epochs=1000")
    part = raw
    for depth, key in enumerate(keys[:-1]):
        part = part.setdefault(key, {})
        if not isinstance(part, dict):
            where = ".".join(keys[: depth + 1])
            raise StudyError(f"override {shown(override)}: {where} is a value, not a section with fields")
    part[keys[-1]] = parse_value(text, f"override {field}")


def parse_space(raw: dict[str, Any], source: str = "search space", root: str | Path | None = None) -> SearchSpace:
    """Validate an already-parsed mapping (what `load_space` does after reading YAML), the data included; a data
    file's path is relative to `root` (default: the working directory)."""
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as exc:
        _refuse(source, _messages(exc))
    space.dataset._root = Path(root) if root is not None else Path.cwd()
    if space.model.build is not None:
        from study.custom_model import build_problems

        space.model._root = space.dataset._root
        problems = build_problems(space.model)
        if problems:
            _refuse(source, problems)
    problems = _data_problems(space)
    if problems:
        _refuse(source, problems)
    return space


def _refuse(source: str, problems: list[str]) -> NoReturn:
    lines = "\n".join(f"  - {p}" for p in problems)
    noun = "problem" if len(problems) == 1 else "problems"
    raise StudyError(f"{source} is not a valid search space ({len(problems)} {noun}):\n{lines}") from None


def _data_problems(space: SearchSpace) -> list[str]:
    """Make the study's data (the generator checks its own parameters) and check the split and model against it."""
    spec = space.dataset
    try:
        check_params(spec.params)  # as written: JSON would turn an infinite value into null
        data = split_of(spec.source(), spec.split.split_seed)
    except DataError as exc:
        value = "" if exc.value is NO_VALUE else f" = {shown(exc.value)}"
        return [f"dataset.{exc.field}{value}: {exc.rule}"]
    outputs = data.n_outputs
    stopping = space.training.early_stopping
    if data.task == "regression" and stopping is not None and stopping.monitor == "val_accuracy":
        return ["training.early_stopping.monitor = 'val_accuracy': a regression has no accuracy; use val_loss"]
    if data.task == "regression" and space.evaluation.mc_samples:
        return [
            f"evaluation.mc_samples = {space.evaluation.mc_samples}: Monte Carlo dropout's calibration metrics are "
            "for classifiers, and this dataset is a regression; set mc_samples: 0 or leave it out"
        ]
    largest = max(
        space.model.parameter_count(widths, data.n_features, outputs, data.image_shape)
        for widths in space.axis_values()["hidden_units"]
    )
    if largest > MAX_PARAMETERS:
        return [
            f"model: {largest:,} weights per trial ({data.n_features} features, {outputs} outputs); at most "
            f"{MAX_PARAMETERS:,}: use fewer or narrower layers"
        ]
    return []


MAX_PROBLEMS_PER_FIELD = 3


def _messages(exc: ValidationError) -> list[str]:
    """One line per problem, at most MAX_PROBLEMS_PER_FIELD per field (a list of 1000 bad rates is one mistake)."""
    messages: list[str] = []
    per_field: dict[str, int] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        # pydantic reports each failed branch of a union; the branch tag is noise to a user.
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in {"int", "float", "none"})))
        field = _format_loc(loc)
        if err["type"] == "extra_forbidden":
            parent, key = loc[:-1], str(loc[-1])
            allowed = list(_SECTION_MODELS.get(tuple(str(p) for p in parent), SearchSpace).model_fields)
            where = f" in {_format_loc(parent)}" if parent else ""
            msg = f"unknown key {shown(key)}{where}{_suggest(key[:100], allowed)}; allowed: {', '.join(allowed)}"
        elif err["type"] == "missing":
            msg = f"{field}: required but missing"
        elif not loc:  # a rule across fields: its text names them
            msg = err["msg"].removeprefix("Value error, ")
        else:
            text = re.sub(r" or instance of \w+$", "", err["msg"].removeprefix("Value error, "))
            value = err.get("input")
            equals = f" = {shown(value)}" if not isinstance(value, dict | list) else ""
            msg = f"{field}{equals}: {text}"
        if msg in messages:
            continue
        list_field = _format_loc(tuple(p for p in loc if not isinstance(p, int)))
        per_field[list_field] = per_field.get(list_field, 0) + 1
        if per_field[list_field] <= MAX_PROBLEMS_PER_FIELD:
            messages.append(msg)
    for field, count in per_field.items():
        if count > MAX_PROBLEMS_PER_FIELD:
            messages.append(f"{field}: {count - MAX_PROBLEMS_PER_FIELD} more problem(s) like these")
    return messages


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
