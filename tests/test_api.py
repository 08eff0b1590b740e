"""The Python API and the command's conventions: the README's example runs, --version, FIELD=VALUE overrides."""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import PYTHON, ROOT

from study.errors import StudyError
from study.space import load_space


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_python_example_runs(tmp_path) -> None:
    (tmp_path / "search_spaces").symlink_to(ROOT / "search_spaces")
    code = "import matplotlib\nmatplotlib.use('Agg')\n" + readme_example()
    proc = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results" / "smoke" / "report.html").is_file()
    assert "no regularisation" in proc.stdout


def test_version_is_printed_by_the_console_command() -> None:
    proc = subprocess.run([PYTHON, "-m", "study", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and re.fullmatch(r"dropout-study \d+\.\d+\.\d+\n", proc.stdout)


def test_overrides_replace_fields_before_validation() -> None:
    space = load_space(ROOT / "search_spaces" / "smoke.yaml", ["seeds=5", "training.epochs=7", "axes.l2=[0.0, 0.01]"])
    assert space.seeds == list(range(5)) and space.training.epochs == 7 and space.n_trials == 40


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("seeds", "override 'seeds' must be FIELD=VALUE"),
        ("seeds=[1", "override seeds: '[1' is not a YAML value"),
        ("training.epochs=-3", "training.epochs = -3: Input should be greater than 0"),
        ("trainin.epochs=3", "unknown key 'trainin' (did you mean 'training'?)"),
        ("name.x=1", "override 'name.x=1': name is a value, not a section with fields"),
    ],
)
def test_a_bad_override_gets_the_files_one_line_message(override: str, expected: str) -> None:
    with pytest.raises(StudyError, match=re.escape(expected)):
        load_space(ROOT / "search_spaces" / "smoke.yaml", [override])


def test_an_override_on_the_command_line_is_validated_with_exit_status_2() -> None:
    proc = subprocess.run([PYTHON, "-m", "study", "search", "search_spaces/smoke.yaml", "seeds=0", "--dry-run"],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 2 and "seeds" in proc.stderr and "Traceback" not in proc.stderr


def test_an_override_on_a_file_that_is_no_mapping_is_one_line(tmp_path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    proc = subprocess.run([PYTHON, "-m", "study", "search", str(path), "seeds=3", "--dry-run"], capture_output=True,
                          text=True, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "must be a YAML mapping" in proc.stderr


def test_changing_the_monte_carlo_passes_changes_what_a_trial_means() -> None:
    plain = load_space(ROOT / "search_spaces" / "smoke.yaml")
    with_mc = load_space(ROOT / "search_spaces" / "smoke.yaml", ["evaluation.mc_samples=30"])
    assert plain.first_trial().key == with_mc.first_trial().key  # the training is the same
    assert plain.trial_fingerprint() != with_mc.trial_fingerprint()  # so a study cannot silently mix the two
