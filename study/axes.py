"""The grid axes, as data: one row per axis in `REGISTRY`, so that adding an axis touches this file.

Each axis says what its values are (the validator of one value), what "off" means (the value at which it does not
regularise, or none for an axis such as the width that always has a value), which model families it applies to,
how it is written in figures and sentences, whether its values are drawn on a numeric scale, how it is stored, and
its kind in the Google tuning playbook's sense:

- scientific: a regulariser whose effect the study measures; every comparison is against its "off" value.
- fixed: a setting the study varies without asking about it (the width, the learning rate, epochs, batch size);
  comparisons are made within each of its values, never across them.
- nuisance: a fixed-kind axis the space file lists under `nuisance:`; for every setting of the scientific axes the
  report takes its best value (chosen on validation data) before comparing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field

MAX_RATE = 0.999
MAX_FLOAT_SETTING = 100.0  # learning rate, L2 strength, min_delta; max-norm up to 1e6
MIN_MAX_NORM = 1e-6
MAX_EPOCHS = 1_000_000
MAX_WIDTH = 8_192  # units of a hidden layer, filters of a conv block
MAX_LAYERS = 16
# custom: the user's own Keras model (`model.build`), which reads the axes it wants with hp.get(name)
FAMILIES = ("mlp", "cnn", "rnn", "custom")
NO_OFF = object()  # the `off` of an axis that has no "not regularised" value


def _rate(value: float) -> float:
    if not 0.0 <= value <= MAX_RATE:
        raise ValueError(
            f"a rate must be in [0, {MAX_RATE}]: it is the fraction of units zeroed, as in Keras' Dropout(rate) "
            "(closer to 1, float32 cannot hold the 1/(1-rate) scaling)"
        )
    return positive_zero(value)


def positive_zero(value: float) -> float:
    """-0.0 as 0.0 (the same setting); an int stays an int, so existing studies keep their fingerprints."""
    return value + 0.0 if isinstance(value, float) else value


def _max_norm(value: float | None) -> float | None:
    if value is not None and not MIN_MAX_NORM <= value <= 1e6:
        raise ValueError(f"a max-norm must be from {MIN_MAX_NORM:g} to 1e6 (or null for no constraint)")
    return value


def _l2(value: float) -> float:
    if not 0 <= value <= MAX_FLOAT_SETTING:
        raise ValueError(f"an L2 strength must be from 0 to {MAX_FLOAT_SETTING:g}")
    return positive_zero(value)


def _widths(value: Any) -> Any:
    """A layer-width list; a single integer means one value for every hidden layer."""
    if isinstance(value, bool) or not isinstance(value, int | list):
        raise ValueError("must be a positive integer or a list of positive integers, e.g. 500 or [128, 64]")
    widths = value if isinstance(value, list) else [value]
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in widths):
        raise ValueError("must be a positive integer or a non-empty list of positive integers, e.g. [128, 64]")
    if len(widths) > MAX_LAYERS or max(widths) > MAX_WIDTH:
        raise ValueError(f"at most {MAX_LAYERS} layers of at most {MAX_WIDTH} units each")
    return value


Rate = Annotated[float, AfterValidator(_rate)]
MaxNorm = Annotated[float | None, AfterValidator(_max_norm)]
L2 = Annotated[float, AfterValidator(_l2)]
Widths = Annotated[Any, AfterValidator(_widths)]
LearningRate = Annotated[float, Field(gt=0, le=MAX_FLOAT_SETTING)]
Epochs = Annotated[int, Field(gt=0, le=MAX_EPOCHS)]
BatchSize = Annotated[int, Field(gt=0, le=MAX_EPOCHS)]


@dataclass(frozen=True)
class Axis:
    """Everything the code knows about one grid axis (see the module docstring)."""

    name: str
    value_type: Any  # the pydantic type of one value in a space file
    short: str  # in sentences and legends: "dropout 0.5"
    label: str  # on a figure's axis
    families: tuple[str, ...] = FAMILIES
    off: Any = NO_OFF  # the value that means "not regularised"
    numeric: bool = False  # drawn on a numeric x scale (else as ordered categories)
    log_scale: bool = False
    training: bool = False  # overrides a `training:` setting of the space (stored in that setting's own column)
    added_later: bool = False  # left out of hashes while unset, so results made before it keep their keys

    @property
    def scientific(self) -> bool:
        """A regulariser: the study measures its effect against its "off" value."""
        return self.off is not NO_OFF

    def is_off(self, value: Any) -> bool:
        """Whether a stored value means "not regularised" (a blank -- an axis of another family -- counts as off)."""
        if not self.scientific:
            return False
        import pandas as pd

        return bool(pd.isna(value)) or bool(value == self.off)

    def default(self, space: Any) -> Any:
        """The value of this axis in a study that does not sweep it."""
        return _DEFAULTS[self.name](space)

    def normalise(self, value: Any, space: Any) -> Any:
        """A space file's value as the one form trials carry (widths as tuples, rates as floats)."""
        if self.name == "hidden_units":
            return tuple(value) if isinstance(value, list) else (value,) * len(space.model.hidden_units)
        if self.numeric or self.name in ("l2", "max_norm"):
            return None if value is None else float(value)
        return value

    def stored(self, value: Any) -> Any:
        """A trial's value as trials.csv holds it (widths as '500-250')."""
        return "-".join(str(w) for w in value) if self.name == "hidden_units" else value

    def encode(self, value: Any) -> Any:
        """A trial's value as a keras-tuner Choice value: one plain type per axis (no None, no tuples). A max-norm
        must be positive, so 0 unambiguously means "no constraint"."""
        if self.name == "max_norm":
            return 0.0 if value is None else float(value)
        return self.stored(value)

    def decode(self, value: Any) -> Any:
        """The inverse of `encode`."""
        if self.name == "max_norm":
            return None if value == 0.0 else float(value)
        if self.name == "hidden_units":
            return tuple(int(w) for w in str(value).split("-"))
        return value


_RATE_FAMILIES = {
    "dropout_rate": FAMILIES,
    "input_dropout": FAMILIES,
    "conv_dropout": ("cnn",),
    "pool_dropout": ("cnn",),
    "spatial_dropout": ("cnn",),
    "lstm_dropout": ("rnn",),
    "recurrent_dropout": ("rnn",),
}


def _rate_axis(name: str, short: str, label: str) -> Axis:
    return Axis(
        name,
        Rate,
        short,
        label,
        families=_RATE_FAMILIES[name],
        off=0.0,
        numeric=True,
        added_later=name not in ("dropout_rate", "input_dropout"),
    )


# In the order axes are enumerated and stored.
REGISTRY: tuple[Axis, ...] = (
    _rate_axis("dropout_rate", "dropout", "Dropout rate (fraction of hidden units zeroed)"),
    _rate_axis("input_dropout", "input dropout", "Input dropout rate (fraction of inputs zeroed)"),
    _rate_axis("conv_dropout", "conv dropout", "Dropout after each convolution (fraction of activations zeroed)"),
    _rate_axis("pool_dropout", "pool dropout", "Dropout after each pooling (fraction of activations zeroed)"),
    _rate_axis("spatial_dropout", "spatial dropout", "SpatialDropout2D rate (fraction of feature maps zeroed)"),
    _rate_axis("lstm_dropout", "LSTM dropout", "LSTM input dropout (one mask per sample for all time steps)"),
    _rate_axis(
        "recurrent_dropout", "recurrent dropout", "LSTM recurrent dropout (one mask per sample for all time steps)"
    ),
    Axis("max_norm", MaxNorm, "max-norm", "Max-norm limit on incoming weights (none = unconstrained)", off=None),
    Axis("l2", L2, "L2", "L2 strength (λ)", off=0.0),
    Axis("batch_norm", bool, "batch norm", "Batch normalisation", families=("mlp", "cnn", "custom"), off=False),
    Axis("hidden_units", Widths, "width", "Hidden units per layer"),
    Axis("early_stopping", bool, "early stopping", "Early stopping", off=False),
    Axis(
        "learning_rate",
        LearningRate,
        "learning rate",
        "Adam learning rate",
        numeric=True,
        log_scale=True,
        training=True,
        added_later=True,
    ),
    Axis("epochs", Epochs, "epochs", "Epochs (at most, with early stopping)", training=True, added_later=True),
    Axis("batch_size", BatchSize, "batch size", "Minibatch size", training=True, added_later=True),
)

_DEFAULTS: dict[str, Callable[[Any], Any]] = {
    **{name: (lambda space: 0.0) for name in _RATE_FAMILIES},
    "max_norm": lambda space: None,
    "l2": lambda space: 0.0,
    "batch_norm": lambda space: False,
    "hidden_units": lambda space: tuple(space.model.hidden_units),
    "early_stopping": lambda space: bool(space.training.early_stopping and space.training.early_stopping.enabled),
    "learning_rate": lambda space: space.training.optimizer.learning_rate,
    "epochs": lambda space: space.training.epochs,
    "batch_size": lambda space: space.training.batch_size,
}

AXIS = {axis.name: axis for axis in REGISTRY}
AXES = tuple(AXIS)
RATE_AXES = tuple(a.name for a in REGISTRY if a.value_type is Rate)
SCIENTIFIC_AXES = tuple(a.name for a in REGISTRY if a.scientific)
TRAINING_AXES = tuple(a.name for a in REGISTRY if a.training)
ADDED_AXES = tuple(a.name for a in REGISTRY if a.added_later)
FAMILY_AXES = {family: tuple(a.name for a in REGISTRY if family in a.families) for family in FAMILIES}
