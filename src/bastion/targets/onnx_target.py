"""An ONNX model run by onnxruntime as a :class:`Target` (extra ``onnx``).

The graph is loaded from bytes (the verified bytes when the caller has them), never
re-read from the path after it was hashed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from bastion.core.capability import Capability
from bastion.core.errors import ConfigError, TargetError
from bastion.targets._util import (
    as_scores,
    import_extra,
    read_model_bytes,
    sha256_hex,
    softmax,
    verify_sha256,
)
from bastion.targets.base import Target

log = logging.getLogger(__name__)

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
_INT_TYPES = {"tensor(int64)", "tensor(int32)", "tensor(int16)", "tensor(int8)", "tensor(uint8)"}

OnnxOutput = Literal["logits", "probabilities", "labels"]


class OnnxTarget(Target):
    """An ONNX classifier in this process (onnxruntime, CPU, one intra-op thread).

    Handles a single-output graph (e.g. ``torch.onnx.export``: logits ``(N, C)``) and the
    skl2onnx convention of two outputs, ``label`` and probabilities (a ``(N, C)`` tensor,
    or a ZipMap list of ``{class: probability}`` dicts). A fixed batch dimension in the
    graph (e.g. 1) is honoured by chunking and padding; a graph taking the flattened
    input ``(N, prod(input_shape))`` gets reshaped rows.

    Threat model: grey-box (scores, no gradients).

    Args:
        path: the ``.onnx`` file (read once unless ``model_bytes`` is given; then for messages).
        name: asset name.
        input_shape: one sample's shape.
        num_classes: number of classes.
        output: what the chosen graph output holds: ``logits``, ``probabilities`` or
            ``labels``; ``None`` guesses (a ZipMap or an output named ``*prob*`` means
            probabilities, else logits).
        model_bytes: the verified bytes of the file.
        expected_sha256: when given, the bytes must hash to it.
        batch_size: rows per run when the graph's batch dimension is dynamic.

    Capabilities:
        ``LOGITS`` + ``PROBABILITIES`` (softmax) for logits, ``PROBABILITIES`` for
        probabilities, ``LABEL_ONLY`` for labels; always ``BATCHED``.

    Raises:
        IntegrityError: ``expected_sha256`` is given and the bytes differ.
        TargetError: missing file, not a valid ONNX graph, unsupported inputs/outputs, or
            an input shape that contradicts ``input_shape``.
        MissingExtraError: onnxruntime is not installed.
    """

    kind: ClassVar[str] = "onnx"

    def __init__(
        self,
        path: str | Path,
        *,
        name: str,
        input_shape: tuple[int, ...],
        num_classes: int,
        output: OnnxOutput | None = None,
        model_bytes: bytes | None = None,
        expected_sha256: str | None = None,
        batch_size: int = 512,
    ) -> None:
        if output not in (None, "logits", "probabilities", "labels"):
            raise ConfigError(f"{name}: output must be 'logits', 'probabilities' or 'labels', got {output!r}")
        if batch_size < 1:
            raise ConfigError(f"{name}: batch_size must be at least 1, got {batch_size}")
        ort = import_extra("onnxruntime", "onnx")
        data = read_model_bytes(path, model_bytes)
        if expected_sha256 is not None:
            verify_sha256(data, expected_sha256, where=path)
        self.path = Path(path)
        self.sha256 = sha256_hex(data)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        import tempfile

        # Loaded from the verified bytes, onnxruntime would resolve a tensor's external-data file
        # against the working folder (a relative location read ``keys/key.pem`` there), and no
        # hash or signature covers such a file: external data is resolved in an empty folder
        # instead, so a model that needs any fails to load (self-contained models only).
        with tempfile.TemporaryDirectory(prefix="bastion-onnx-") as empty:
            opts.add_session_config_entry("session.model_external_initializers_file_folder_path", empty)
            try:
                self.session = ort.InferenceSession(
                    data, sess_options=opts, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf
                text = str(exc)
                if "external data" in text.lower():
                    raise TargetError(
                        f"{path}: not loaded: its tensors are kept in external files, which Bastion does "
                        "not load (no hash or signature of the model covers them); save the model with "
                        "the weights inside (onnx.save(model, path, save_as_external_data=False))"
                    ) from None
                first = text.splitlines()[0][:200] if text else ""
                why = f"{type(exc).__name__}: {first}"
                raise TargetError(f"{path}: not a loadable ONNX model ({why})") from None
        shape = tuple(int(d) for d in input_shape)

        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise TargetError(
                f"{path}: the graph takes {len(inputs)} inputs; only single-input models are supported"
            )
        inp = inputs[0]
        if inp.type not in _FLOAT_TYPES:
            raise TargetError(f"{path}: input {inp.name!r} is {inp.type}; only float tensors are supported")
        self._in_name: str = inp.name
        self._in_dtype = _FLOAT_TYPES[inp.type]
        dims = list(inp.shape or [])
        batch_dim = dims[0] if dims else None
        self._fixed_batch = int(batch_dim) if isinstance(batch_dim, int) and batch_dim > 0 else None
        self.batch_size = self._fixed_batch or int(batch_size)
        feat = dims[1:]
        self._reshape: tuple[int, ...] | None = None
        if feat and all(isinstance(d, int) and d > 0 for d in feat):
            fixed = tuple(int(d) for d in feat)
            if fixed != shape:
                if math.prod(fixed) == math.prod(shape):
                    self._reshape = fixed
                else:
                    raise TargetError(
                        f"{path}: the graph takes samples of shape {fixed}, but input_shape is {shape}"
                    )

        self._out_name, resolved, self._zipmap = _choose_output(self.session.get_outputs(), output, path)
        self.output: OnnxOutput = resolved
        caps = {Capability.BATCHED}
        if resolved == "logits":
            caps |= {Capability.LOGITS, Capability.PROBABILITIES}
        elif resolved == "probabilities":
            caps.add(Capability.PROBABILITIES)
        else:
            caps.add(Capability.LABEL_ONLY)
        super().__init__(name=name, input_shape=shape, num_classes=num_classes, capabilities=frozenset(caps))
        log.debug("loaded ONNX model %s (output %r read as %s)", path, self._out_name, resolved)

    # -- running ------------------------------------------------------------------------
    def _run(self, x: np.ndarray) -> list[Any]:
        """Raw outputs of the chosen graph output, one entry per chunk."""
        xs = x.astype(self._in_dtype, copy=False)
        if self._reshape is not None:
            xs = xs.reshape((len(xs), *self._reshape))
        parts: list[Any] = []
        for i in range(0, len(xs), self.batch_size):
            xb = np.ascontiguousarray(xs[i : i + self.batch_size])
            n = len(xb)
            if self._fixed_batch is not None and n < self._fixed_batch:
                pad = np.zeros((self._fixed_batch - n, *xb.shape[1:]), dtype=xb.dtype)
                xb = np.concatenate([xb, pad])
            try:
                (out,) = self.session.run([self._out_name], {self._in_name: xb})
            except Exception as exc:  # onnxruntime Fail / InvalidArgument
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                msg = f"{self.name}: onnxruntime failed ({type(exc).__name__}: {first})"
                raise TargetError(msg) from None
            parts.append(out[:n])
        return parts

    def _scores(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, self.num_classes))
        rows: list[np.ndarray] = []
        for part in self._run(x):
            if self._zipmap:
                rows.append(self._from_zipmap(part))
            else:
                rows.append(np.asarray(part, dtype=np.float64))
        kind = "logits" if self.output == "logits" else "probabilities"
        return as_scores(np.concatenate(rows), kind=kind, num_classes=self.num_classes, name=self.name)

    def _from_zipmap(self, dicts: Any) -> np.ndarray:
        """ZipMap output (list of ``{class: prob}``) as ``(n, num_classes)``."""
        out = np.zeros((len(dicts), self.num_classes), dtype=np.float64)
        for r, d in enumerate(dicts):
            keys = list(d.keys())
            if all(isinstance(k, (int, np.integer)) and 0 <= int(k) < self.num_classes for k in keys):
                for k in keys:
                    out[r, int(k)] = float(d[k])
            elif len(keys) == self.num_classes:
                out[r] = [float(d[k]) for k in keys]
            else:
                raise TargetError(f"{self.name}: probability map keys {keys[:10]} do not fit num_classes")
        return out

    def _predict_logits(self, x: np.ndarray) -> np.ndarray:
        return self._scores(x)

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        s = self._scores(x)
        return softmax(s) if self.output == "logits" else s

    def _predict_label(self, x: np.ndarray) -> np.ndarray:
        if self.output != "labels":
            return np.asarray(self._scores(x).argmax(axis=1), dtype=np.int64)
        if len(x) == 0:
            return np.zeros((0,), dtype=np.int64)
        labels = np.concatenate([np.asarray(p).reshape(-1) for p in self._run(x)]).astype(np.int64)
        if len(labels) != len(x) or labels.min() < 0 or labels.max() >= self.num_classes:
            raise TargetError(f"{self.name}: graph labels do not lie in [0, {self.num_classes})")
        return labels


def _choose_output(
    outputs: list[Any], output: OnnxOutput | None, path: str | Path
) -> tuple[str, OnnxOutput, bool]:
    """``(output name, what it holds, is ZipMap)`` for the graph's outputs."""
    if output == "labels":
        labels = [o for o in outputs if o.type in _INT_TYPES]
        if not labels:
            raise TargetError(f"{path}: output 'labels' asked, but the graph has no integer output")
        return labels[0].name, "labels", False
    scores = [o for o in outputs if o.type in _FLOAT_TYPES or str(o.type).startswith("seq(map(")]
    if not scores:
        types = ", ".join(f"{o.name}: {o.type}" for o in outputs)
        raise TargetError(f"{path}: no float or probability-map output among [{types}]")
    named_prob = [o for o in scores if "prob" in o.name.lower()]
    if output == "logits":
        others = [o for o in scores if o not in named_prob]
        chosen = (others or scores)[0]
    else:
        chosen = (named_prob or scores)[0]
    zipmap = str(chosen.type).startswith("seq(map(")
    if output is None:
        output = "probabilities" if zipmap or "prob" in chosen.name.lower() else "logits"
    elif output == "logits" and zipmap:
        raise TargetError(f"{path}: output {chosen.name!r} is a probability map, not logits")
    return chosen.name, output, zipmap
