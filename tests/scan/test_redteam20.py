"""Red-team round 20: Keras configs judged by their values, and the Keras folder layout."""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

import pytest

from bastion.core.scanning import Verdict
from bastion.core.severity import Severity
from bastion.scan import scan_file, scan_paths

from ._factories import os_system_payload
from ._formats import cve_2024_3660_config, keras_config, keras_file, keras_layer


def _rules(fr: object) -> set[str]:
    return {f.rule_id for f in fr.findings}  # type: ignore[attr-defined]


def _wrapper(payload: bytes) -> dict[str, object]:
    return _wrapper_of(base64.b64encode(payload).decode())


def _wrapper_of(module: str) -> dict[str, object]:
    # keras_layer's own ``module`` is the object's Python module; the layer's is in its config
    layer = keras_layer("TorchModuleWrapper", name="torch_module")
    layer["config"]["module"] = module
    return layer


def test_torch_module_wrapper_is_high_and_its_pickle_is_scanned(tmp_path: Path) -> None:
    # K1: TorchModuleWrapper.from_config hands the base64 bytes to torch.load(weights_only=False)
    fr = scan_file(
        keras_file(tmp_path / "m.keras", keras_config(_wrapper(os_system_payload(tmp_path / "pwned"))))
    )
    assert fr.verdict == Verdict.MALICIOUS
    assert {"scan.keras.torch-module", "scan.pickle.denied-global"} <= _rules(fr), _rules(fr)
    # a module that is not even base64 is still the high finding, and an error: it was not checked
    fr = scan_file(keras_file(tmp_path / "n.keras", keras_config(_wrapper_of("\u00e9"))))
    assert "scan.keras.torch-module" in _rules(fr) and fr.verdict in (Verdict.MALICIOUS, Verdict.ERROR)


def test_torch_module_wrapper_in_a_legacy_h5_config(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    h = tmp_path / "legacy.h5"
    with h5py.File(h, "w") as f:
        f.attrs["model_config"] = json.dumps(keras_config(_wrapper(os_system_payload(tmp_path / "pwned"))))
    fr = scan_file(h)
    assert fr.verdict == Verdict.MALICIOUS and "scan.hdf5.torch-module" in _rules(fr), _rules(fr)


@pytest.mark.parametrize("layer", ["StringLookup", "IntegerLookup", "TextVectorization"])
def test_a_vocabulary_path_is_a_file_read(tmp_path: Path, layer: str) -> None:
    # K1b: a lookup layer given a path opens it when the model is loaded (CVE-2025-12058)
    cfg = keras_config(keras_layer(layer, vocabulary="/etc/passwd"))
    fr = scan_file(keras_file(tmp_path / "m.keras", cfg))
    assert fr.verdict == Verdict.MALICIOUS and "scan.keras.file-path-config" in _rules(fr)
    listed = keras_config(keras_layer(layer, vocabulary=["a", "b"]))
    assert scan_file(keras_file(tmp_path / "ok.keras", listed)).verdict == Verdict.SAFE


def _folder(root: Path, config: dict[str, object]) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps(config))
    (root / "metadata.json").write_text(json.dumps({"keras_version": "3.10.0"}))
    return root


def test_the_keras_folder_layout_has_its_config_checked(tmp_path: Path) -> None:
    # K2: load_model(folder) reads config.json beside model.weights.h5 as it reads the zip member
    bad = _folder(tmp_path / "bad", cve_2024_3660_config())
    res = scan_paths([bad])
    by_name = {Path(f.path).name: f for f in res.files}
    cfg = by_name["config.json"]
    assert (cfg.format, cfg.verdict) == ("keras-config", Verdict.MALICIOUS)
    assert "scan.keras-config.lambda-layer" in _rules(cfg)
    good = _folder(tmp_path / "good", keras_config(keras_layer("Dense", units=2)))
    fr = scan_file(good / "config.json")
    assert (fr.format, fr.verdict) == ("keras-config", Verdict.SAFE), fr.findings


@pytest.mark.parametrize(
    ("name", "doc"),
    [
        ("config.json", {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 768}),
        ("config.json", [1, 2, 3]),
        ("tokenizer.json", {"class_name": "Tokenizer", "config": "not a dict"}),
        ("labels.json", {"0": "cat"}),
    ],
)
def test_other_json_files_are_not_claimed(tmp_path: Path, name: str, doc: object) -> None:
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    fr = scan_file(p)
    assert fr.verdict == Verdict.SKIPPED and not fr.findings, (fr.format, fr.findings)


def test_a_keras_config_member_of_an_archive_is_checked(tmp_path: Path) -> None:
    z = tmp_path / "bundle.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("model/config.json", json.dumps(cve_2024_3660_config()))
    fr = scan_file(z)
    assert fr.verdict == Verdict.MALICIOUS and "scan.keras-config.lambda-layer" in _rules(fr), _rules(fr)


@pytest.mark.parametrize(
    "snippet",
    [
        # red-team round 23, V4: rendered on every chat request under jinja2's sandbox
        "{{ 'x' * 1500000000 }}",
        "{{ 2 ** 100000000 }}",
        "{% for a in range(100000) %}{% for b in range(100000) %}.{% endfor %}{% endfor %}",
        # red-team round 25, W4: ways around the first check
        "{{ 'x' * (40000 * 40000) }}",
        "{% set n = 1500000000 %}{{ 'x' * n }}",
        "{{ '%01500000000d' % 1 }}",
        "{{ 'x'|center(1500000000) }}",
        "{{ 'x'|indent(1500000000) }}",
        "{% set n = 100000 %}{% for a in range(n) %}{% for b in range(n) %}.{% endfor %}{% endfor %}",
        "{% set r = range(100000)|list %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    ],
)
def test_a_chat_template_that_computes_without_bound_is_flagged(snippet: str) -> None:
    from bastion.scan.gguf_scanner import template_findings

    assert ("template-compute", Severity.MEDIUM) in {(k, s) for k, s, _ in template_findings(snippet)}


def test_ordinary_chat_templates_compute_nothing_flagged() -> None:
    from bastion.scan.gguf_scanner import template_findings

    chatml = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    loops = "{% for i in range(3) %}{% for j in range(1000) %}{{ i * 2 }}{% endfor %}{% endfor %}"
    assert template_findings(chatml) == [] and template_findings(loops) == []
