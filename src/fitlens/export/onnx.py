"""PyTorch -> one self-contained ONNX file, and the proof that it computes what PyTorch computes.

The app loads the model from a single asset buffer, so the file must carry its weights (the
dynamo exporter's default is a ``.onnx.data`` side file the app could not resolve) and stay
within what the app's ONNX Runtime loads (:data:`APP_MAX_IR_VERSION`, :data:`APP_MAX_OPSET`).

The parity check is the guard against preprocessing drift: PyTorch gets each image through the
*training* data path (:class:`~fitlens.data.datamodule.ImageDataset`, no augmentation), ONNX
Runtime gets it through the *app's* preprocessing (:func:`fitlens.data.images.preprocess`, which
``preprocess.dart`` mirrors). Any difference in pixels, channel order, scale or normalisation
shows up as a probability difference on real photos.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from fitlens.contract import Resize
from fitlens.data.datamodule import ImageDataset
from fitlens.data.images import ImageLoadError, preprocess
from fitlens.data.splits import Sample
from fitlens.export.metadata import (
    APP_MAX_IR_VERSION,
    APP_MAX_OPSET,
    INPUT_NAME,
    KEYPOINTS_NAME,
    LOGITS_NAME,
    PERSON_BOX_NAME,
    PROBABILITIES_NAME,
)

#: Images per onnxruntime/PyTorch call: bounds memory at 224 px without a per-image call.
BATCH = 16

Preprocess = Callable[[Path, Resize], np.ndarray]


class ExportError(RuntimeError):
    """The exported file is not what the app can load; the message names the file and the rule."""


class ParityError(ExportError):
    """ONNX Runtime and PyTorch disagree on real images beyond the tolerance."""

    def __init__(self, message: str, result: ParityResult) -> None:
        super().__init__(message)
        self.result = result


class ExportWrapper(nn.Module):
    """The graph the app runs: contract input -> (logits, softmax probabilities), plus the
    keypoints and person box of a pose model (``net.has_pose_outputs``), for pictures.

    Softmax is inside so every consumer reads calibrated probabilities without reimplementing it.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if has_pose_outputs(self.net):
            logits, keypoints, box = self.net.explain(x)
            return logits, torch.softmax(logits, dim=1), keypoints, box
        logits = self.net(x)
        return logits, torch.softmax(logits, dim=1)


def has_pose_outputs(net: nn.Module) -> bool:
    return bool(getattr(net, "has_pose_outputs", False))


def output_names(net: nn.Module) -> list[str]:
    """The exported graph's outputs, in order."""
    pose = [KEYPOINTS_NAME, PERSON_BOX_NAME] if has_pose_outputs(net) else []
    return [LOGITS_NAME, PROBABILITIES_NAME, *pose]


@dataclass(frozen=True)
class ParityResult:
    images: int
    tolerance: float
    max_abs_diff: float
    max_logit_diff: float
    argmax_mismatches: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance and not self.argmax_mismatches


def main_opset(model: onnx.ModelProto) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def file_opset(path: str | Path) -> int:
    """The default-domain opset an ONNX file was written with."""
    return main_opset(onnx.load(str(path), load_external_data=False))


def _to_onnx(net: nn.Module, size: int, opset: int) -> onnx.ModelProto:
    wrapper = ExportWrapper(net).eval()
    # Batch 2 in the example: a size-1 example dimension would be specialised to a constant.
    example = torch.rand(2, 3, size, size)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, opset_version=opset, external_data=False,
            input_names=[INPUT_NAME], output_names=output_names(net),
            dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    model = program.model_proto
    # The exporter stamps the newest IR version onnx knows; the graph uses nothing past IR 9
    # (checked below by onnx.checker), and the app's runtime refuses anything newer.
    model.ir_version = min(model.ir_version, APP_MAX_IR_VERSION)
    return model


def check_loadable(path: Path, size: int, outputs_expected: Sequence[str] = (
        LOGITS_NAME, PROBABILITIES_NAME)) -> None:
    """Refuse a file the app could not load: invalid, too new, not self-contained, wrong I/O."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{path}: onnx.checker rejects the exported model: {exc}") from exc
    model = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in model.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(f"{path}: {len(external)} initializer(s) (e.g. {external[0]}) live in "
                          "an external data file; expected one self-contained .onnx")
    if model.ir_version > APP_MAX_IR_VERSION or main_opset(model) > APP_MAX_OPSET:
        raise ExportError(f"{path}: IR version {model.ir_version}, opset {main_opset(model)}; "
                          f"the app's ONNX Runtime loads IR <= {APP_MAX_IR_VERSION} and opset <= "
                          f"{APP_MAX_OPSET} (set export.opset accordingly)")
    # From bytes, as the app loads its asset: a model needing a side file fails here.
    session = ort.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    inputs = [(i.name, i.shape) for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    expected_outputs = list(outputs_expected)
    if (len(inputs) != 1 or inputs[0][0] != INPUT_NAME or inputs[0][1][1:] != [3, size, size]
            or isinstance(inputs[0][1][0], int) or outputs != expected_outputs):
        raise ExportError(f"{path}: inputs {inputs}, outputs {outputs}; expected input "
                          f"{INPUT_NAME!r} of shape [batch, 3, {size}, {size}] (dynamic batch) "
                          f"and outputs {expected_outputs}")


def export_onnx(net: nn.Module, dest: str | Path, *, resize: Resize, opset: int,
                parity_samples: Sequence[Sample], tolerance: float) -> ParityResult:
    """Export ``net`` (contract input, logits out) to ``dest``, all or nothing.

    The file is written next to ``dest`` under a temporary name, checked by
    :func:`check_loadable` and :func:`check_parity` on ``parity_samples``, and only then renamed:
    ``dest`` is either untouched or a complete new file that passed both checks.
    """
    dest = Path(dest)
    if opset > APP_MAX_OPSET:
        raise ValueError(f"export.opset={opset}: the app's ONNX Runtime loads opset <= "
                         f"{APP_MAX_OPSET}")
    net = net.eval()
    size = resize.size
    model = _to_onnx(net, size, opset)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        onnx.save_model(model, str(tmp), save_as_external_data=False)
        check_loadable(tmp, size, output_names(net))
        result = check_parity(tmp, net, parity_samples, resize, tolerance=tolerance)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; this is a shared build output
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


def session_for(path: str | Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_outputs(session: ort.InferenceSession, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities) for a ``[N, 3, S, S]`` float32 batch, in chunks of :data:`BATCH`."""
    logits, probs = [], []
    for start in range(0, len(batch), BATCH):
        chunk = np.ascontiguousarray(batch[start:start + BATCH], dtype=np.float32)
        out_logits, out_probs = session.run([LOGITS_NAME, PROBABILITIES_NAME],
                                            {INPUT_NAME: chunk})
        logits.append(out_logits)
        probs.append(out_probs)
    return np.concatenate(logits), np.concatenate(probs)


def image_probabilities(session: ort.InferenceSession, images: Sequence[Path],
                        resize: Resize | int, *,
                        skip_unreadable: bool = False) -> tuple[np.ndarray, list[ImageLoadError]]:
    """``[N, C]`` probabilities for image files through the app's preprocessing, loaded
    :data:`BATCH` at a time (hundreds of 224 px inputs would not fit in memory at once).

    Unreadable files raise :class:`ImageLoadError`, or with ``skip_unreadable`` are left out and
    returned as the second element.
    """
    probs, skipped = [], []
    for start in range(0, len(images), BATCH):
        inputs = []
        for path in images[start:start + BATCH]:
            try:
                inputs.append(preprocess(path, resize))
            except ImageLoadError as exc:
                if not skip_unreadable:
                    raise
                skipped.append(exc)
        if inputs:
            probs.append(onnx_outputs(session, np.concatenate(inputs))[1])
    width = session.get_outputs()[1].shape[1]
    return (np.concatenate(probs) if probs else np.zeros((0, width), np.float32)), skipped


def torch_outputs(net: nn.Module, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    wrapper = ExportWrapper(net).eval()
    logits, probs = [], []
    with torch.no_grad():
        for start in range(0, len(batch), BATCH):
            out_logits, out_probs, *_ = wrapper(torch.from_numpy(batch[start:start + BATCH]))
            logits.append(out_logits.numpy())
            probs.append(out_probs.numpy())
    return np.concatenate(logits), np.concatenate(probs)


def check_parity(model_path: str | Path, net: nn.Module, samples: Sequence[Sample],
                 resize: Resize, *, tolerance: float,
                 app_preprocess: Preprocess = preprocess) -> ParityResult:
    """Compare ONNX Runtime on the app's preprocessing with PyTorch on the training data path.

    Raises :class:`ParityError` (with the numbers) when any probability differs by more than
    ``tolerance`` or any image's top class differs. ``app_preprocess`` is the app side's
    preprocessing; it is a parameter so a test can prove a mismatched one is caught.
    """
    if not samples:
        raise ValueError(f"{model_path}: parity check needs at least one image; the test split "
                         "is empty")
    dataset = ImageDataset(samples, resize)
    reference = np.stack([dataset[i][0].numpy() for i in range(len(dataset))])
    app_inputs = np.concatenate([app_preprocess(s.path, resize) for s in samples])
    torch_logits, torch_probs = torch_outputs(net, reference)
    onnx_logits, onnx_probs = onnx_outputs(session_for(model_path), app_inputs)
    mismatched = np.flatnonzero(torch_probs.argmax(1) != onnx_probs.argmax(1))
    result = ParityResult(
        images=len(samples), tolerance=tolerance,
        max_abs_diff=float(np.abs(torch_probs - onnx_probs).max()),
        max_logit_diff=float(np.abs(torch_logits - onnx_logits).max()),
        argmax_mismatches=tuple(str(samples[i].path) for i in mismatched))
    if not result.ok:
        shown = ", ".join(Path(p).name for p in result.argmax_mismatches[:5])
        raise ParityError(
            f"{model_path}: ONNX Runtime (app preprocessing) vs PyTorch (training data path) on "
            f"{result.images} test images: max |dprobability| = {result.max_abs_diff:.3g} "
            f"(allowed export.parity_tol={tolerance:g}), max |dlogit| = "
            f"{result.max_logit_diff:.3g}, top class differs on "
            f"{len(result.argmax_mismatches)} image(s){': ' + shown if shown else ''}; "
            "the app would not reproduce the trained model", result)
    return result
