"""Model family `custom`: the user's own Keras model, from a keras-tuner-style `build(hp)` function.

`model: {family: custom, build: "my_models:build"}` names the function `build` in `my_models.py`, a path relative to
the search-space file's folder (`pkg.models:build` is `pkg/models.py`). The keras engine calls it once per trial,
right after `keras.utils.set_random_seed(trial.seed)` (so the initial weights follow the seed), with a keras-tuner
`HyperParameters` that holds

- one `Choice` per axis of the family (`FAMILY_AXES["custom"]`), set to the trial's value as the grid encodes it
  (`Axis.encode`: `hidden_units` is a string such as "64-32", `max_norm` 0.0 means none) and `seed`;
- `Fixed` values for the data and the model section: `n_features`, `n_classes`, `n_outputs` (1 for two classes or a
  regression, else `n_classes`), `task` and `activation`;

and fits the compiled model it returns exactly as it fits a built-in family's (data, epochs, batch size, callbacks).

Everything is checked before anything trains, each problem one line naming `model.build`: the module and the
callable when the space is parsed (`build_problems`), the model the first trial's hp builds by the keras engine's
pre-run check (`check_build`); the population engine refuses the family (it writes its networks itself).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study.errors import StudyError, shown

if TYPE_CHECKING:
    import keras

    from study.datasets import Split
    from study.space import ModelSpec, SearchSpace, Trial

FIXED_HP = ("n_features", "n_classes", "n_outputs", "task", "activation")
_LOADED: dict[tuple[str, str], Callable[..., Any]] = {}  # (module file, its SHA-256) -> the build function


def module_file(spec: ModelSpec) -> Path:
    """The Python file `model.build` names, relative to the search-space file's folder."""
    module = spec.build.partition(":")[0]
    return spec._root / (module.replace(".", "/") + ".py")


def module_digest(spec: ModelSpec) -> str:
    """The SHA-256 of the build function's module file (what the study's fingerprint holds), read once per space."""
    if spec._digest is None:
        spec._digest = hashlib.sha256(module_file(spec).read_bytes()).hexdigest()
    return spec._digest


def _first_line(exc: BaseException) -> str:
    """An exception as one line: its type and its first telling line (Keras wraps the cause in a layer's call, bold)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception encountered when calling")]
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def _refuse(spec: ModelSpec, problem: str) -> StudyError:
    return StudyError(f"model.build = {shown(spec.build)}: {problem}")


def load_build(spec: ModelSpec) -> Callable[..., Any]:
    """Import `model.build`'s module (once per file content) and return its build function; StudyError otherwise.

    The module runs under a private name (two studies' `my_models.py` never collide), with its folder first on
    `sys.path` while it is imported, so it may import its neighbours at its top."""
    path = module_file(spec)
    module_name, _, attribute = spec.build.partition(":")
    if not path.is_file():
        raise _refuse(
            spec,
            f"no module file {path.name} in {path.parent} (the module path is relative to the search-space file's "
            "folder: 'my_models:build' is build() in my_models.py next to it)",
        )
    digest = module_digest(spec)
    if (str(path.resolve()), digest) not in _LOADED:
        import study.quiet_tf  # noqa: F401  (the module imports Keras, most likely: quietly)

        name = f"_study_custom_{digest[:16]}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise _refuse(spec, f"importing {path.name} failed: {_first_line(exc)}") from None
        finally:
            sys.path.remove(str(path.parent))
        if not hasattr(module, attribute):
            names = [n for n in vars(module) if not n.startswith("_")]
            close = difflib.get_close_matches(attribute, names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _refuse(spec, f"{path.name} has no {attribute!r}{hint}: define `def {attribute}(hp):` in it")
        function = getattr(module, attribute)
        if not callable(function):
            raise _refuse(
                spec, f"{module_name}.{attribute} is {shown(function)}, not a function: model.build names a build(hp)"
            )
        _LOADED[str(path.resolve()), digest] = function
    return _LOADED[str(path.resolve()), digest]


def build_problems(spec: ModelSpec) -> list[str]:
    """What `parse_space` refuses: the module cannot be found or imported, or has no callable of that name."""
    try:
        load_build(spec)
    except StudyError as exc:
        return [str(exc)]
    return []


def hyperparameters_for(trial: Trial, data: Split):
    """The keras-tuner HyperParameters `build(hp)` reads: the trial's axis values and seed, and the fixed sizes."""
    from study.axes import AXIS
    from study.oracle import hyperparameters

    space = trial.space
    hp = hyperparameters(space, space.applicable_axes)  # another family's axis is not there: hp.get says so
    hp.values.update({axis: AXIS[axis].encode(trial.config[axis]) for axis in space.applicable_axes}, seed=trial.seed)
    for name, value in zip(FIXED_HP, _fixed(trial, data), strict=True):
        hp.Fixed(name, value)
    return hp


def _fixed(trial: Trial, data: Split) -> tuple[Any, ...]:
    return int(data.n_features), int(data.n_classes), int(data.n_outputs), data.task, trial.space.model.activation


def build_custom(trial: Trial, data: Split) -> keras.Model:
    """Call the user's build(hp) for `trial` and return the compiled model; StudyError if it raises or returns
    anything else. The caller seeds Keras with the trial's seed first (`train` does, and `check_build`)."""
    import keras

    spec = trial.space.model
    build = load_build(spec)
    hp = hyperparameters_for(trial, data)
    try:
        model = build(hp)
    except Exception as exc:
        names = f" (hp holds: {', '.join(hp.values)})" if isinstance(exc, KeyError) else ""
        raise _refuse(spec, f"build(hp) raised {_first_line(exc)}{names}") from None
    if not isinstance(model, keras.Model):
        raise _refuse(spec, f"build(hp) returned {shown(model)}, not a keras.Model: return the compiled model")
    if not model.compiled or model.optimizer is None or model.loss is None:
        raise _refuse(
            spec,
            "the model build(hp) returned is not compiled: call model.compile(optimizer=keras.optimizers.Adam("
            "hp.get('learning_rate')), loss=..., metrics=['accuracy']) before returning it",
        )
    return model


def check_build(space: SearchSpace) -> None:
    """Build the first trial's model as the keras engine will and evaluate it on two training rows: refuses (one
    line) a build that raises, returns no compiled model, does not fit the data, lacks a metric the engine records,
    is too large, or (with evaluation.mc_samples) cannot be copied for Monte Carlo dropout. Imports TensorFlow:
    only the keras engine calls it, for family custom only."""
    import keras

    from study.engines.base import split_for
    from study.engines.keras_engine import labels, output_head
    from study.space import MAX_PARAMETERS

    trial = space.first_trial()
    data = split_for(trial)
    keras.utils.set_random_seed(trial.seed)
    try:
        model = build_custom(trial, data)
        try:
            scores = model.evaluate(
                data.x_train[:2], labels(data.y_train[:2], data.n_classes), verbose=0, return_dict=True
            )
        except Exception as exc:
            raise _refuse(
                space.model,
                f"the model does not fit the data ({data.n_features} features in, {data.n_outputs} output(s) and "
                f"labels for {'a regression' if data.task == 'regression' else f'{data.n_classes} classes'}; "
                f"hp.get('n_features'), hp.get('n_outputs')): {_first_line(exc)}",
            ) from None
        missing = [name for name in output_head(data).scores if name not in scores]
        if missing:
            needed = ", ".join(repr(n) for n in output_head(data).scores)
            raise _refuse(
                space.model,
                f"the model reports no {missing[0]!r}, which the engine records for every epoch: compile it with "
                f"metrics=[{needed}] (it reports {', '.join(scores)})",
            )
        weights = model.count_params()
        if weights > MAX_PARAMETERS:
            raise _refuse(space.model, f"the model has {weights:,} weights; at most {MAX_PARAMETERS:,} per trial")
        if space.evaluation.mc_samples:
            from study.engines.keras_engine import mc_dropout_model

            try:  # a subclassed keras.Model cannot be cloned with its dropout forced on
                mc_dropout_model(model)
            except Exception as exc:
                raise _refuse(
                    space.model,
                    f"evaluation.mc_samples = {space.evaluation.mc_samples}: Monte Carlo dropout copies the model with "
                    f"every dropout forced on (keras.models.clone_model), which fails for it ({_first_line(exc)}): "
                    "build a functional or Sequential model, or set mc_samples: 0",
                ) from None
    finally:
        keras.backend.clear_session()
