"""New-user trial 32: a project file's ``model_class`` may not name the standard library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bastion.cli.main import run
from bastion.core.config import Asset
from bastion.core.errors import ConfigError
from bastion.targets.torch_target import import_class


@pytest.mark.parametrize(
    "ref", ["this:WineNet", "antigravity:Net", "idlelib.idle:Net", "os:system", "__main__:Net"]
)
def test_model_class_of_the_standard_library_is_refused_before_any_import(ref: str) -> None:
    root = ref.split(":")[0].split(".")[0]
    was_loaded = root in sys.modules
    why = "__main__ module" if root == "__main__" else "standard library"
    with pytest.raises(ValueError, match=why):
        Asset(name="m", kind="model", path="m.pt", framework="torch", model_class=ref)
    with pytest.raises(ConfigError, match=why):
        import_class(ref)  # the loader refuses it too, without importing it
    assert (root in sys.modules) == was_loaded


@pytest.mark.parametrize(
    "ref", ["mynets:WineNet", "torchvision.models.resnet:ResNet", "bastion.examples.clinic_models:DigitsCNN"]
)
def test_the_users_and_libraries_model_classes_stand(ref: str) -> None:
    assert Asset(name="m", kind="model", path="m.pt", framework="torch", model_class=ref).model_class == ref


def test_assess_on_a_project_naming_a_stdlib_model_class_runs_nothing_of_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # trial 32: `model_class: "this:WineNet"` printed the Zen of Python (the module's import ran)
    (tmp_path / "m.pt").write_bytes(b"\x80\x02}q\x00.")
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        "version: 1\nassets:\n  - {name: m, path: m.pt, framework: torch, model_class: 'this:WineNet'}\n"
    )
    sys.modules.pop("this", None)
    assert run(["assess", "-c", str(cfg), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert "Zen of Python" not in out + err and "this" not in sys.modules
    assert "standard library" in err and "model_class" in err


def _scan_only_project(tmp_path: Path) -> tuple[list[str], str]:
    import pickle

    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x02cos\nsystem\nX\x05\x00\x00\x00touch\x85R.")
    (tmp_path / "bastion.yaml").write_text(
        "version: 1\nproject: {name: p}\nassets:\n  - {name: m, path: m.pkl}\n"
        "  - {name: bad, path: bad.pkl}\n"
    )
    db = f"sqlite:///{tmp_path / 'b.db'}"
    argv = ["assess", "-c", str(tmp_path / "bastion.yaml"), "-o", str(tmp_path / "rep"), "--db", db]
    return [*argv, "--only", "scan"], db


def test_show_states_the_gate_the_run_was_made_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # trial 32, M5: `show` re-rendered every run's gate as `--fail-on medium`
    argv, db = _scan_only_project(tmp_path)
    assert run([*argv, "--fail-on", "none"]) == 0
    capsys.readouterr()
    assert run(["show", "latest", "--db", db, "-f", "json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["run"]["fail_on"] == "none"
    assert run(["show", "latest", "--db", db, "-f", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "Gate (`--fail-on none`)" in md and "--fail-on medium" not in md
    assert run(["show", "latest", "--db", db, "-f", "markdown", "--fail-on", "critical"]) == 0
    assert "Gate (`--fail-on critical`)" in capsys.readouterr().out  # asked for: re-gated
    assert run(["show", "latest", "--db", db, "-f", "html"]) == 0
    assert "at or above medium" not in capsys.readouterr().out


def test_show_table_to_a_file_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # trial 32, M5: `show -f table -o FILE` wrote the JSON report
    argv, db = _scan_only_project(tmp_path)
    assert run([*argv, "--fail-on", "critical"]) == 1
    capsys.readouterr()
    out = tmp_path / "r.table"
    assert run(["show", "latest", "--db", db, "-f", "table", "-o", str(out)]) == 0
    text = out.read_text()
    assert not text.lstrip().startswith("{") and "FAIL: 1 finding at or above critical" in text
    assert "\x1b" not in text


def test_a_run_stored_before_schema_1_6_takes_its_gate_from_the_store_row(tmp_path: Path) -> None:
    import datetime as dt

    from sqlalchemy import select, update

    from bastion.core.report import Report, RunInfo
    from bastion.store import Store
    from bastion.store.models import RunRow

    url = f"sqlite:///{tmp_path / 'b.db'}"
    report = Report(
        bastion_version="0", run=RunInfo(id="r" * 32, status="ok", started=dt.datetime.now(dt.UTC), seconds=0)
    )
    with Store.open(url) as st:
        st.save_report(report, fail_on="high")
        assert st.get_report("latest").run.fail_on is None  # a 1.6.0 report keeps its own (exact)
        # as a run stored by schema 1.5.0: its report has no run.fail_on, only the row's column
        with st._engine.begin() as conn:
            stored = conn.execute(select(RunRow.report)).scalar_one()
            old = json.loads(stored) if isinstance(stored, str) else dict(stored)
            old["schema_version"] = "1.5.0"
            del old["run"]["fail_on"]
            conn.execute(update(RunRow).values(report=old))
        assert st.get_report("latest").run.fail_on == "high"


_PLAN_YAML = """version: 1
project: {name: p}
datasets:
  - {name: d, path: d.npz, splits: {train: [0, 50], test: [50, 100]}}
assets:
  - {name: sk, kind: model, path: m.pkl, framework: sklearn, dataset: d}
  - {name: nn, kind: model, path: m.pt, framework: torch, model_class: "mynets:Net", dataset: d}
"""

_SKIPPED_BEFOREHAND = {
    ("membership.lira", "sk"): "needs a training recipe",
    ("membership.rmia", "sk"): "needs a training recipe",
    ("membership.attribute-inference", "sk"): "no sensitive feature configured",
    ("membership.dp-curve", "sk"): "DP-SGD retrains torch models",
    ("poisoning.backdoor", "sk"): "needs a torch model target",
    ("membership.dp-curve", "nn"): "runs under --budget thorough",
}


def test_the_plan_skips_what_the_run_would_skip_from_the_project_file_alone(tmp_path: Path) -> None:
    # trial 32, M1: --dry-run said these would run; the run then skipped them for reasons known before
    from bastion.api import plan
    from bastion.api._assessing import _check_context
    from bastion.core.budget import PRESETS
    from bastion.core.registry import REGISTRIES

    (tmp_path / "bastion.yaml").write_text(_PLAN_YAML)
    p = plan(tmp_path / "bastion.yaml", budget="standard")
    reasons = {(i.check_id, i.asset): i.skip_reason for i in p.items}
    for key, words in _SKIPPED_BEFOREHAND.items():
        assert words in (reasons[key] or ""), (key, reasons[key])
        # the run's own decision (applicable) gives the same words: one function decides both
        cls = REGISTRIES["attack"].get(key[0])
        asset = next(a for a in p.config.assets if a.name == key[1])
        ctx = _check_context(cls, p.config, tmp_path, asset, PRESETS["standard"], None, {}, {})
        assert cls().applicable(ctx) == reasons[key]
    assert reasons[("membership.threshold", "sk")] is None  # still planned
    thorough = plan(tmp_path / "bastion.yaml", budget="thorough")
    curve = [i for i in thorough.items if i.check_id == "membership.dp-curve" and i.asset == "nn"]
    assert curve and curve[0].skip_reason is None
    (tmp_path / "bastion.yaml").write_text(
        _PLAN_YAML + "checks:\n  membership.lira: {params: {recipe: 'mypkg.train:fit'}}\n"
    )
    configured = plan(tmp_path / "bastion.yaml")
    assert not any(i.skip_reason for i in configured.items if i.check_id == "membership.lira")


def test_the_guard_range_admits_held_out_rows_near_the_training_range_and_refuses_far_ones() -> None:
    # trial 32, M3: a 5 % margin refused 2 of 597 real digits test rows (0.5 against a training
    # max of 0.4375 on a rarely lit pixel), and with them whole 200-row batches
    import numpy as np

    from bastion.guard.profile import DEFAULT_RANGE_MARGIN, fit_profile
    from bastion.guard.validation import InputRejected, InputValidator

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(200, 4))
    x[:, 1] = np.where(rng.uniform(size=200) < 0.05, rng.uniform(0, 0.4375, 200), 0.0)
    x[0, 1] = 0.4375
    prof = fit_profile(x, num_classes=2)
    assert prof.meta["range_margin"] == DEFAULT_RANGE_MARGIN
    v = InputValidator(input_shape=(4,), profile=prof)
    assert v.parse({"instances": [[0.5, 0.5, 0.5, 0.5]]}).shape == (1, 4)  # held out, near the range
    for far in (5.0, -3.0, 1e6):
        with pytest.raises(InputRejected) as ei:
            v.parse({"instances": [[0.5, far, 0.5, 0.5]]})
        assert ei.value.field == "instances[0][1]" and "outside the trained range" in ei.value.reason
    strict = InputValidator(input_shape=(4,), profile=fit_profile(x, num_classes=2, margin=0.05))
    with pytest.raises(InputRejected):
        strict.parse({"instances": [[0.5, 0.5, 0.5, 0.5]]})
    with pytest.raises(ConfigError, match="range margin"):
        fit_profile(x, num_classes=2, margin=-0.1)


def test_guard_fit_takes_and_records_the_range_margin(
    wine_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from bastion.cli import guard as guard_cli
    from bastion.guard.profile import DEFAULT_RANGE_MARGIN, load_profile

    cfg = str(wine_project / "bastion.yaml")
    out = wine_project / "prof"
    assert run(["guard", "fit", "-c", cfg, "--asset", "triage", "-o", str(out), "--range-margin", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["range_margin"] == 0.5
    assert load_profile(out).meta["range_margin"] == 0.5
    assert run(["guard", "fit", "-c", cfg, "--asset", "triage", "-o", str(out), "--range-margin", "-1"]) == 4
    import inspect

    default = inspect.signature(guard_cli.fit).parameters["range_margin"].default
    assert default == DEFAULT_RANGE_MARGIN


def test_history_format_is_case_insensitive_and_its_help_lists_the_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # trial 32: `history -f JSON` gave rc 4; the help showed `--format <str>`
    db = f"sqlite:///{tmp_path / 'none.db'}"
    assert run(["history", "-f", "JSON", "--db", db]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert run(["history", "-f", "xml", "--db", db]) == 4
    assert run(["history", "--help"]) == 0
    assert "table|json" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "hint"), [("pikle", "did you mean 'pickle'"), ("onxx", "did you mean 'onnx'")]
)
def test_an_unknown_asset_format_is_a_config_error_with_a_did_you_mean(value: str, hint: str) -> None:
    # trial 32: `format: pikle` in bastion.yaml was accepted silently
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=hint):
        Asset(name="m", kind="model", path="m.pkl", format=value)
    for ok in ("pickle", "Joblib", "numpy", "csv", "safetensors"):
        assert Asset(name="m", kind="model", path="m.pkl", format=ok).format == ok


def test_the_known_formats_cover_the_loaders_and_the_scanners() -> None:
    from bastion.api._plugins import load_plugins
    from bastion.core.config import KNOWN_FORMATS, MODEL_FORMATS
    from bastion.core.registry import REGISTRIES
    from bastion.targets.loader import _FORMATS

    load_plugins()
    assert set(_FORMATS) == set(MODEL_FORMATS)
    scanned = {f for _, cls in REGISTRIES["scanner"].items() for f in getattr(cls, "formats", ()) or ()}
    assert "npy" in scanned and scanned <= set(KNOWN_FORMATS)


def test_init_in_the_current_folder_says_just_bastion_assess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # trial 32: "run: cd . && bastion assess"
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    monkeypatch.chdir(tmp_path)
    assert run(["init"]) == 0
    err = capsys.readouterr().err
    assert "then run: bastion assess" in err and "cd ." not in err
