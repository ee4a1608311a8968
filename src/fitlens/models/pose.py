"""BlazePose, Google's pose landmark model, read from its TFLite file into a frozen torch module.

No pose weights exist here in a torch format; the TFLite file ships inside the ``mediapipe`` wheel
(Apache-2.0, see shared/WEIGHTS.md). Rather than depend on a TFLite runtime at training time, or
on mediapipe itself (it pins numpy<2), the file's graph is rebuilt in torch:
:class:`TFLiteGraph` is a small converter for exactly the ops this model uses, reproducing
TFLite's arithmetic (SAME padding, fused activations, resize flags, NHWC reshapes). The result
trains next to the classifier on the CPU, moves with ``.to()``, keeps its weights in
``state_dict`` and exports to ONNX inside a larger graph.

Weights come from an explicit ``model.pose.weights_path`` (a local .tflite file) if given, else
from the installed wheel, which is located without importing mediapipe.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tflite
import torch
import torch.nn.functional as F
from torch import nn

from fitlens.models.backbones import PretrainedWeightsUnavailable

#: Side of the square RGB image the model takes.
INPUT_SIZE = 256
NUM_LANDMARKS = 33
#: BlazePose's 33 body landmarks, in the model's output order ("left" is the person's left).
LANDMARK_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye_inner", "left_eye", "left_eye_outer",
    "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear",
    "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
    "left_pinky", "right_pinky",
    "left_index", "right_index",
    "left_thumb", "right_thumb",
    "left_hip", "right_hip",
    "left_knee", "right_knee",
    "left_ankle", "right_ankle",
    "left_heel", "right_heel",
    "left_foot_index", "right_foot_index",
)


def _mirror_name(name: str) -> str:
    return re.sub("left|right", lambda m: "right" if m.group() == "left" else "left", name)


#: ``(left, right)`` landmark index pairs: a horizontal flip of the photo swaps each pair.
LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (i, LANDMARK_NAMES.index(_mirror_name(name)))
    for i, name in enumerate(LANDMARK_NAMES)
    if "left" in name
)
#: Per landmark the file gives x, y (pixels of the 256-px input), z, visibility and presence
#: (both logits); 39 of them: the 33 body landmarks, then 6 auxiliary ones used for tracking.
LANDMARK_FIELDS = ("x", "y", "z", "visibility_logit", "presence_logit")
_FILE_LANDMARKS = 39

WEIGHTS_SETTING = "model.pose.weights_path"
MEDIAPIPE_PIP = "pip install --no-deps mediapipe==0.10.21"
WHEEL_PACKAGE = "mediapipe"
WHEEL_FILE = "modules/pose_landmark/pose_landmark_full.tflite"
_INPUT = "input_1"
_LANDMARKS_OUTPUT = "Identity"
_PRESENCE_OUTPUT = "Identity_1"


class PoseWeightsUnavailable(PretrainedWeightsUnavailable):
    """The BlazePose TFLite file is neither installed (mediapipe wheel) nor given as a path."""


def _how_to_proceed() -> str:
    return (f"run `{MEDIAPIPE_PIP}` (--no-deps: the wheel pins numpy<2, and only its .tflite "
            f"file is read, mediapipe is never imported), or pass "
            f"{WEIGHTS_SETTING}=/path/to/pose_landmark_full.tflite")


def wheel_weights_path() -> Path:
    """The landmark model inside the installed mediapipe wheel.

    ``find_spec`` on a top-level package locates it without running its ``__init__``, which
    would fail against numpy 2.
    """
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PoseWeightsUnavailable(
            f"BlazePose: its weights come from the {WHEEL_PACKAGE} wheel ({WHEEL_PACKAGE}/"
            f"{WHEEL_FILE}), which is not installed; {_how_to_proceed()}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / WHEEL_FILE
        if path.is_file():
            return path
    try:
        version = importlib.metadata.version(WHEEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "of unknown version"
    raise PoseWeightsUnavailable(
        f"BlazePose: {WHEEL_PACKAGE} {version} is installed at "
        f"{', '.join(spec.submodule_search_locations)} but holds no {WHEEL_FILE} (wheels after "
        f"0.10.21 ship no .tflite files); {_how_to_proceed()}"
    )


def resolve_weights(weights_path: str | None = None) -> Path:
    """``weights_path`` if given (it must exist), else the wheel's file."""
    if weights_path is None:
        return wheel_weights_path()
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise PoseWeightsUnavailable(
            f"{WEIGHTS_SETTING}={weights_path}: file not found; expected BlazePose's "
            f"pose_landmark_full.tflite. Point it at that file, or unset it and "
            f"run `{MEDIAPIPE_PIP}` to use the wheel's copy"
        )
    return path


# --------------------------------------------------------------------------------------------
# Reading the flatbuffer
# --------------------------------------------------------------------------------------------

_OP_NAMES: dict[int, str] = dict(tflite.BUILTIN_OPCODE2NAME)
_TYPE_NAMES = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
_NUMPY_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32,
                "INT64": np.int64}
_ACTIVATIONS = {v: k for k, v in vars(tflite.ActivationFunctionType).items()
                if not k.startswith("_")}
_SAME, _VALID = tflite.Padding.SAME, tflite.Padding.VALID
_OPTIONS = {
    "CONV_2D": (tflite.BuiltinOptions.Conv2DOptions, tflite.Conv2DOptions),
    "DEPTHWISE_CONV_2D": (tflite.BuiltinOptions.DepthwiseConv2DOptions,
                          tflite.DepthwiseConv2DOptions),
    "ADD": (tflite.BuiltinOptions.AddOptions, tflite.AddOptions),
    "MAX_POOL_2D": (tflite.BuiltinOptions.Pool2DOptions, tflite.Pool2DOptions),
    "RESIZE_BILINEAR": (tflite.BuiltinOptions.ResizeBilinearOptions,
                        tflite.ResizeBilinearOptions),
}


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None  # contents of a constant, in TFLite layout


@dataclass(frozen=True)
class _Op:
    index: int
    name: str
    inputs: tuple[int, ...]  # -1: an optional input left out
    outputs: tuple[int, ...]
    options: Any  # the op's tflite options table, or None


@dataclass(frozen=True)
class _Graph:
    path: Path
    tensors: list[_Tensor]
    ops: list[_Op]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _buffer_bytes(model: Any, buf: bytes, index: int) -> bytes | None:
    if index <= 0 or index >= model.BuffersLength():
        return None
    buffer = model.Buffers(index)
    if buffer.Offset() > 1:  # files over 2 GB keep tensor data after the flatbuffer
        return buf[buffer.Offset(): buffer.Offset() + buffer.Size()]
    if buffer.DataLength() == 0:
        return None
    return buffer.DataAsNumpy().tobytes()


def _read_graph(path: Path) -> _Graph:
    """Parse a .tflite file into plain records; raise ValueError if it is not one."""
    buf = path.read_bytes()
    if len(buf) < 8 or not tflite.Model.ModelBufferHasIdentifier(buf, 0):
        raise ValueError(f"{path}: not a TFLite flatbuffer (no 'TFL3' file identifier at "
                         f"byte 4; starts with {buf[:8]!r})")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        subgraph = model.Subgraphs(0)
        tensors = []
        for i in range(subgraph.TensorsLength()):
            t = subgraph.Tensors(i)
            dtype = _TYPE_NAMES.get(t.Type(), str(t.Type()))
            shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            raw = _buffer_bytes(model, buf, t.Buffer())
            data = None
            if raw is not None:
                if dtype not in _NUMPY_TYPES or t.Sparsity() is not None:
                    what = "sparse" if t.Sparsity() is not None else dtype
                    raise ValueError(f"{path}: constant tensor {t.Name().decode()!r} is {what}; "
                                     f"only dense {', '.join(_NUMPY_TYPES)} constants are read")
                data = np.frombuffer(raw, _NUMPY_TYPES[dtype]).reshape(shape)
            tensors.append(_Tensor(t.Name().decode(), shape, dtype, data))
        ops = []
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            # Codes above 127 live only in builtin_code; older files only fill the deprecated one.
            number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = _OP_NAMES.get(number, f"builtin #{number}")
            if name == "CUSTOM":
                name = f"CUSTOM ({code.CustomCode().decode()})"
            options = None
            if name in _OPTIONS and op.BuiltinOptions() is not None:
                kind, cls = _OPTIONS[name]
                if op.BuiltinOptionsType() != kind:
                    raise ValueError(f"{path}: operator {i} ({name}) carries options of type "
                                     f"{op.BuiltinOptionsType()}, expected {kind}")
                table = op.BuiltinOptions()
                options = cls()
                options.Init(table.Bytes, table.Pos)
            ops.append(_Op(i, name, tuple(int(x) for x in op.InputsAsNumpy()),
                           tuple(int(x) for x in op.OutputsAsNumpy()), options))
        inputs = tuple(int(x) for x in subgraph.InputsAsNumpy())
        outputs = tuple(int(x) for x in subgraph.OutputsAsNumpy())
    except ValueError:
        raise
    except Exception as exc:  # a damaged flatbuffer fails with struct/index errors
        raise ValueError(f"{path}: has the TFLite identifier but cannot be parsed "
                         f"({type(exc).__name__}: {exc})") from exc
    return _Graph(path, tensors, ops, inputs, outputs)


# --------------------------------------------------------------------------------------------
# Torch layers with TFLite's semantics. Rank-4 activations are held NCHW; everything else keeps
# TFLite's layout. Shapes in the file are static, so all paddings and sizes are fixed here.
# --------------------------------------------------------------------------------------------


def _activate(x: torch.Tensor, kind: str) -> torch.Tensor:
    """A fused activation, in place: ``x`` is always a layer's fresh output, read by no one else."""
    if kind == "RELU":
        return F.relu(x, inplace=True)
    if kind == "RELU6":
        return F.relu6(x, inplace=True)
    if kind == "RELU_N1_TO_1":
        return F.hardtanh(x, -1.0, 1.0, inplace=True)
    return x


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite's SAME padding: the odd pixel of an uneven total goes after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _to_tflite_layout(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """An internal rank-4 (NCHW) tensor as NHWC; other ranks are already in TFLite's layout."""
    if len(shape) != 4:
        return x
    _, h, w, c = shape
    if h * w == 1 or c == 1:  # the same element order either way: a free view, no transpose
        return x.reshape(-1, h, w, c)
    return x.permute(0, 2, 3, 1)


def _to_internal_layout(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A TFLite-layout tensor of ``shape`` (NHWC if rank 4) as held internally (NCHW)."""
    if len(shape) != 4:
        return x
    _, h, w, c = shape
    if h * w == 1 or c == 1:
        return x.reshape(-1, c, h, w)
    return x.permute(0, 3, 1, 2)


class _Conv(nn.Module):
    """CONV_2D and DEPTHWISE_CONV_2D: weights stored NCHW, padding done as TFLite does it."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, stride: tuple[int, int],
                 dilation: tuple[int, int], pads: tuple[int, int, int, int], groups: int,
                 activation: str) -> None:
        super().__init__()
        # np.array copies: the file's read-only bytes must not back a trainable tensor.
        self.weight = nn.Parameter(torch.from_numpy(np.array(weight, np.float32)))
        self.bias = (nn.Parameter(torch.from_numpy(np.array(bias, np.float32)))
                     if bias is not None else None)
        self.stride, self.dilation, self.groups, self.activation = (stride, dilation, groups,
                                                                    activation)
        top, bottom, left, right = pads
        # Symmetric padding goes into the convolution itself; TFLite's asymmetric SAME padding
        # (stride 2 on even sizes) needs an explicit pad first.
        if top == bottom and left == right:
            self.padding, self.pre_pad = (top, left), None
        else:
            self.padding, self.pre_pad = (0, 0), (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        return _activate(x, self.activation)


class _Add(nn.Module):
    """ADD of two activations, or of an activation and a constant (numpy broadcasting)."""

    def __init__(self, constant: np.ndarray | None, activation: str) -> None:
        super().__init__()
        self.constant: torch.Tensor | None
        if constant is None:
            self.constant = None
        else:
            self.register_buffer("constant", torch.from_numpy(constant.astype(np.float32)))
        self.activation = activation

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        other = self.constant if b is None else b
        return _activate(a + other, self.activation)


class _Pad(nn.Module):
    def __init__(self, pads: tuple[int, ...]) -> None:
        super().__init__()
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads)


class _MaxPool(nn.Module):
    """MAX_POOL_2D; SAME padding pads with -inf so that padded cells never win, as in TFLite."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int],
                 pads: tuple[int, int, int, int], activation: str) -> None:
        super().__init__()
        top, bottom, left, right = pads
        self.kernel, self.stride, self.activation = kernel, stride, activation
        self.pads = (left, right, top, bottom) if any(pads) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads is not None:
            x = F.pad(x, self.pads, value=float("-inf"))
        return _activate(F.max_pool2d(x, self.kernel, self.stride), self.activation)


def _legacy_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """TFLite's bilinear weights along one axis with neither flag set, as a matrix.

    That is TF1's legacy mode (source = output index * in/out in float32, the upper neighbour
    clamped at the far edge), which torch has no mode for; the axes are separable, so
    ``R_h @ x @ R_w.T`` reproduces it.
    """
    scale = np.float32(in_size / out_size)
    matrix = np.zeros((out_size, in_size), np.float32)
    for o in range(out_size):
        source = np.float32(o) * scale
        low = max(int(np.floor(source)), 0)
        high = min(int(np.ceil(source)), in_size - 1)
        frac = np.float32(source - low)
        matrix[o, low] += 1 - frac
        matrix[o, high] += frac
    return matrix


class _ResizeBilinear(nn.Module):
    """RESIZE_BILINEAR for each valid flag combination.

    half_pixel_centers is torch's ``align_corners=False``, align_corners is torch's
    ``align_corners=True`` (both for up- and downsampling: TFLite does not antialias either);
    neither flag is TF1's legacy mode, done with interpolation matrices.
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int], align_corners: bool,
                 half_pixel_centers: bool) -> None:
        super().__init__()
        self.size = out_hw
        self.align_corners = align_corners
        self.legacy = not (align_corners or half_pixel_centers)
        if self.legacy:
            self.register_buffer("rows", torch.from_numpy(
                _legacy_resize_matrix(in_hw[0], out_hw[0])))
            self.register_buffer("cols_t", torch.from_numpy(
                _legacy_resize_matrix(in_hw[1], out_hw[1]).T.copy()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.legacy:
            return self.rows @ x @ self.cols_t
        return F.interpolate(x, size=self.size, mode="bilinear",
                             align_corners=self.align_corners)


class _Reshape(nn.Module):
    """RESHAPE in TFLite's element order: NHWC, whatever the internal layout."""

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.in_shape, self.out_shape = in_shape, out_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _to_tflite_layout(x, self.in_shape).reshape(-1, *self.out_shape[1:])
        return _to_internal_layout(x, self.out_shape)


class _Logistic(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


# --------------------------------------------------------------------------------------------
# The converter
# --------------------------------------------------------------------------------------------

SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PAD", "MAX_POOL_2D", "RESIZE_BILINEAR",
                 "RESHAPE", "LOGISTIC", "DEQUANTIZE")
_SUPPORTED_ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


@dataclass(frozen=True)
class _Step:
    key: str  # the op's module name in ``TFLiteGraph.ops``
    inputs: tuple[int, ...]  # activation tensors, in argument order
    output: int
    release: tuple[int, ...]  # tensors no later step reads: dropped to bound memory


class _Converter:
    """Turns the parsed graph into torch layers and an execution plan; used once, at load."""

    def __init__(self, graph: _Graph, wanted: Sequence[int]) -> None:
        self.path = graph.path
        self._graph = graph
        self._wanted = list(wanted)
        self._constants = {i: t.data for i, t in enumerate(graph.tensors) if t.data is not None}
        self._ops = self._ops_needed(self._wanted)
        readers: dict[int, list[_Op | None]] = {i: [None] for i in self._wanted}  # None: caller
        for op in self._ops:
            for i in set(op.inputs):
                readers.setdefault(i, []).append(op)
        self._only_reader = {i: who[0] for i, who in readers.items() if len(who) == 1}
        # PAD outputs merged into the VALID convolution that alone reads them: tensor -> (source
        # tensor, (top, bottom, left, right)). Zero padding then VALID is a padded convolution,
        # and one op instead of two saves a copy of the feature map.
        self._pads_into_conv: dict[int, tuple[int, tuple[int, int, int, int]]] = {}

    def convert(self) -> tuple[dict[str, nn.Module], tuple[_Step, ...]]:
        """The layers, keyed ``<op>_<index in the file>``, and the steps that run them."""
        for i in self._graph.inputs:
            self._check_float(i, "graph input")
        layers: dict[str, nn.Module] = {}
        steps: list[tuple[str, tuple[int, ...], int]] = []
        for op in self._ops:
            built = self._build(op)
            if built is None:  # folded at load time
                continue
            key = f"{op.name.lower()}_{op.index}"
            layers[key], inputs = built
            steps.append((key, inputs, op.outputs[0]))
        for index in self._wanted:
            if index in self._constants:
                raise ValueError(f"{self.path}: output {self._graph.tensors[index].name!r} is a "
                                 "constant; only computed outputs are supported")
        return layers, self._with_releases(steps, self._wanted)

    # -- building --------------------------------------------------------------------------

    def _where(self, op: _Op) -> str:
        return f"{self.path}: operator {op.index} ({op.name})"

    def _ops_needed(self, wanted: Sequence[int]) -> list[_Op]:
        producer = {out: op for op in self._graph.ops for out in op.outputs}
        needed: set[int] = set()
        stack = list(wanted)
        while stack:
            tensor = stack.pop()
            op = producer.get(tensor)
            if op is not None and op.index not in needed:
                needed.add(op.index)
                stack.extend(i for i in op.inputs if i >= 0)
        ops = [op for op in self._graph.ops if op.index in needed]
        unsupported = sorted({op.name for op in ops if op.name not in SUPPORTED_OPS})
        if unsupported:
            first = next(op for op in ops if op.name in unsupported)
            raise ValueError(
                f"{self._where(first)}: unsupported op {', '.join(unsupported)}; this converter "
                f"handles {', '.join(SUPPORTED_OPS)} (float graphs)")
        return ops

    def _shape(self, index: int) -> tuple[int, ...]:
        return self._graph.tensors[index].shape

    def _check_float(self, index: int, what: str) -> None:
        tensor = self._graph.tensors[index]
        if tensor.dtype != "FLOAT32":
            raise ValueError(f"{self.path}: {what} {tensor.name!r} is {tensor.dtype}; only float32 "
                             "activations are supported (quantized graphs are not)")

    def _activation(self, op: _Op) -> str:
        kind = _ACTIVATIONS.get(op.options.FusedActivationFunction(), "?") if op.options else "NONE"
        if kind not in _SUPPORTED_ACTIVATIONS:
            raise ValueError(f"{self._where(op)}: fused activation {kind} is not supported "
                             f"(supported: {', '.join(_SUPPORTED_ACTIVATIONS)})")
        return kind

    def _constant(self, op: _Op, index: int, what: str) -> np.ndarray:
        if index not in self._constants:
            raise ValueError(f"{self._where(op)}: its {what} must be a constant tensor")
        return self._constants[index]

    def _build(self, op: _Op) -> tuple[nn.Module, tuple[int, ...]] | None:
        activations = [i for i in op.inputs if i >= 0 and i not in self._constants]
        if op.name == "DEQUANTIZE":
            source = op.inputs[0]
            data = self._constants.get(source)
            if data is None or data.dtype != np.float16:
                raise ValueError(f"{self._where(op)}: only DEQUANTIZE of a constant float16 "
                                 f"tensor (fp16 weights) is supported; "
                                 f"{self._graph.tensors[source].name!r} is "
                                 f"{'computed' if data is None else data.dtype}")
            self._constants[op.outputs[0]] = data.astype(np.float32)
            return None
        if not activations:
            raise ValueError(f"{self._where(op)}: every input is a constant; constant folding "
                             "is only done for DEQUANTIZE")
        for index in activations:
            self._check_float(index, "input")
        self._check_float(op.outputs[0], "output")
        builder = getattr(self, f"_build_{op.name.lower()}")
        return builder(op, tuple(activations))

    def _conv_input(self, op: _Op) -> tuple[int, tuple[int, int, int, int]]:
        """The tensor a convolution reads, and any zero padding merged from a PAD before it."""
        source = op.inputs[0]
        if source in self._pads_into_conv and op.options.Padding() == _VALID:
            return self._pads_into_conv.pop(source)
        return source, (0, 0, 0, 0)

    def _conv_geometry(self, op: _Op, in_hw: tuple[int, int], kernel: tuple[int, int],
                       pads: tuple[int, int, int, int]
                       ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
        o = op.options
        stride = (o.StrideH(), o.StrideW())
        dilation = (max(o.DilationHFactor(), 1), max(o.DilationWFactor(), 1))
        if o.Padding() == _SAME:
            pads = (*_same_padding(in_hw[0], kernel[0], stride[0], dilation[0]),
                    *_same_padding(in_hw[1], kernel[1], stride[1], dilation[1]))
        elif o.Padding() != _VALID:
            raise ValueError(f"{self._where(op)}: padding {o.Padding()} is neither SAME nor VALID")
        return stride, dilation, pads

    def _bias(self, op: _Op) -> np.ndarray | None:
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            return None
        return self._constant(op, op.inputs[2], "bias")

    def _build_conv_2d(self, op: _Op, inputs: tuple[int, ...]) -> tuple[nn.Module, tuple[int, ...]]:
        _, h, w, channels = self._shape(op.inputs[0])
        weight = self._constant(op, op.inputs[1], "filter")  # [O, KH, KW, I]
        if weight.shape[3] != channels:
            raise ValueError(f"{self._where(op)}: grouped convolution ({channels} input channels, "
                             f"filter has {weight.shape[3]}) is not supported")
        source, pads = self._conv_input(op)
        stride, dilation, pads = self._conv_geometry(op, (h, w), weight.shape[1:3], pads)
        module = _Conv(weight.transpose(0, 3, 1, 2), self._bias(op), stride, dilation, pads, 1,
                       self._activation(op))
        return module, (source,)

    def _build_depthwise_conv_2d(self, op: _Op, inputs: tuple[int, ...]
                                 ) -> tuple[nn.Module, tuple[int, ...]]:
        _, h, w, channels = self._shape(op.inputs[0])
        weight = self._constant(op, op.inputs[1], "filter")  # [1, KH, KW, C * multiplier]
        if weight.shape[3] % channels:
            raise ValueError(f"{self._where(op)}: {weight.shape[3]} filters for {channels} "
                             "channels is not a whole depth multiplier")
        # Output channel c * multiplier + m reads input channel c: exactly torch's group order.
        source, pads = self._conv_input(op)
        stride, dilation, pads = self._conv_geometry(op, (h, w), weight.shape[1:3], pads)
        module = _Conv(weight.transpose(3, 0, 1, 2), self._bias(op), stride, dilation, pads,
                       channels, self._activation(op))
        return module, (source,)

    def _build_add(self, op: _Op, inputs: tuple[int, ...]) -> tuple[nn.Module, tuple[int, ...]]:
        out_rank = len(self._shape(op.outputs[0]))
        constant = None
        if len(inputs) == 1:
            (const_index,) = (i for i in op.inputs if i != inputs[0])
            data = self._constant(op, const_index, "second operand").astype(np.float32)
            if data.ndim == out_rank and data.shape[0] != 1:
                raise ValueError(f"{self._where(op)}: a constant operand of shape "
                                 f"{data.shape} would fix the batch size")
            data = data.reshape((1,) * (out_rank - data.ndim) + data.shape)
            constant = data.transpose(0, 3, 1, 2) if out_rank == 4 else data
        elif any(len(self._shape(i)) != out_rank for i in inputs):
            raise ValueError(f"{self._where(op)}: operands of different ranks "
                             f"{[self._shape(i) for i in inputs]} are not supported")
        return _Add(constant, self._activation(op)), inputs

    def _build_pad(self, op: _Op, inputs: tuple[int, ...]
                   ) -> tuple[nn.Module, tuple[int, ...]] | None:
        paddings = self._constant(op, op.inputs[1], "paddings").astype(np.int64).tolist()
        if paddings[0] != [0, 0]:
            raise ValueError(f"{self._where(op)}: padding the batch dimension is not supported")
        if any(p < 0 for pair in paddings for p in pair):
            raise ValueError(f"{self._where(op)}: negative paddings {paddings}")
        consumer = self._only_reader.get(op.outputs[0])
        if (len(paddings) == 4 and paddings[3] == [0, 0] and consumer is not None
                and consumer.name in ("CONV_2D", "DEPTHWISE_CONV_2D")
                and consumer.inputs[0] == op.outputs[0] and consumer.options.Padding() == _VALID):
            self._pads_into_conv[op.outputs[0]] = (inputs[0], (*paddings[1], *paddings[2]))
            return None
        # F.pad takes (before, after) pairs from the last dimension backwards, in internal layout.
        order = [0, 3, 1, 2] if len(paddings) == 4 else list(range(len(paddings)))
        pads = tuple(p for dim in reversed(order) for p in paddings[dim])
        return _Pad(pads), inputs

    def _build_max_pool_2d(self, op: _Op, inputs: tuple[int, ...]
                           ) -> tuple[nn.Module, tuple[int, ...]]:
        _, h, w, _ = self._shape(op.inputs[0])
        o = op.options
        kernel, stride = (o.FilterHeight(), o.FilterWidth()), (o.StrideH(), o.StrideW())
        pads = (0, 0, 0, 0)
        if o.Padding() == _SAME:
            pads = (*_same_padding(h, kernel[0], stride[0], 1),
                    *_same_padding(w, kernel[1], stride[1], 1))
        return _MaxPool(kernel, stride, pads, self._activation(op)), inputs

    def _build_resize_bilinear(self, op: _Op, inputs: tuple[int, ...]
                               ) -> tuple[nn.Module, tuple[int, ...]]:
        _, h, w, _ = self._shape(op.inputs[0])
        _, out_h, out_w, _ = self._shape(op.outputs[0])
        size = self._constant(op, op.inputs[1], "size").astype(np.int64).tolist()
        if size != [out_h, out_w]:
            raise ValueError(f"{self._where(op)}: size {size} disagrees with the output shape "
                             f"{self._shape(op.outputs[0])}")
        align = bool(op.options.AlignCorners()) if op.options else False
        half = bool(op.options.HalfPixelCenters()) if op.options else False
        if align and half:
            raise ValueError(f"{self._where(op)}: align_corners and half_pixel_centers both set; "
                             "TFLite itself rejects this combination")
        return _ResizeBilinear((h, w), (out_h, out_w), align, half), inputs

    def _build_reshape(self, op: _Op, inputs: tuple[int, ...]
                       ) -> tuple[nn.Module, tuple[int, ...]]:
        in_shape, out_shape = self._shape(op.inputs[0]), self._shape(op.outputs[0])
        if (not in_shape or not out_shape or in_shape[0] != out_shape[0]
                or np.prod(in_shape) != np.prod(out_shape) or min(out_shape) < 1):
            raise ValueError(f"{self._where(op)}: reshape {in_shape} -> {out_shape} must keep "
                             "the leading (batch) dimension and the element count")
        return _Reshape(in_shape, out_shape), inputs[:1]

    def _build_logistic(self, op: _Op, inputs: tuple[int, ...]
                        ) -> tuple[nn.Module, tuple[int, ...]]:
        return _Logistic(), inputs

    @staticmethod
    def _with_releases(steps: list[tuple[str, tuple[int, ...], int]], keep: Sequence[int]
                       ) -> tuple[_Step, ...]:
        last_use: dict[int, int] = {}
        for position, (_, inputs, _) in enumerate(steps):
            for index in inputs:
                last_use[index] = position
        releases: dict[int, list[int]] = {}
        for index, position in last_use.items():
            if index not in keep:
                releases.setdefault(position, []).append(index)
        return tuple(_Step(key, inputs, output, tuple(releases.get(position, ())))
                     for position, (key, inputs, output) in enumerate(steps))


class TFLiteGraph(nn.Module):
    """A float TFLite graph as a torch module, for the ops in :data:`SUPPORTED_OPS`.

    Weights become parameters in torch layout (NCHW); rank-4 activations are computed NCHW,
    and converted from/to TFLite's NHWC only at the graph's inputs and outputs (``layout="nhwc"``,
    the file's convention) or not at all (``layout="nchw"``, for embedding in a torch model).
    The file's batch size (usually 1) is not baked in: any batch size works.

    Only the ops that the requested ``outputs`` (tensor names; default: all of the file's
    outputs) depend on are built, so unused heads cost nothing. fp16 weights (DEQUANTIZE of a
    constant) are folded to fp32 at load time.
    """

    def __init__(self, path: str | Path, outputs: Sequence[str] | None = None,
                 layout: str = "nhwc") -> None:
        super().__init__()
        if layout not in ("nhwc", "nchw"):
            raise ValueError(f"layout={layout!r}: expected 'nhwc' or 'nchw'")
        self.path = Path(path)
        self.layout = layout
        graph = _read_graph(self.path)
        by_name = {graph.tensors[i].name: i for i in graph.outputs}
        if outputs is None:
            wanted = list(graph.outputs)
        else:
            missing = [name for name in outputs if name not in by_name]
            if missing:
                raise ValueError(f"{self.path}: no output named {', '.join(missing)}; the file's "
                                 f"outputs are {', '.join(by_name)}")
            wanted = [by_name[name] for name in outputs]
        layers, self._steps = _Converter(graph, wanted).convert()
        self.ops = nn.ModuleDict(layers)
        self.input_names = tuple(graph.tensors[i].name for i in graph.inputs)
        self.output_names = tuple(graph.tensors[i].name for i in wanted)
        self.input_shapes = tuple(graph.tensors[i].shape for i in graph.inputs)
        self.output_shapes = tuple(graph.tensors[i].shape for i in wanted)
        self._input_indices = graph.inputs
        self._output_indices = tuple(wanted)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the graph; inputs in the file's order, 4-D ones in ``self.layout``."""
        if len(inputs) != len(self._input_indices):
            raise TypeError(f"{self.path.name}: expected {len(self._input_indices)} inputs "
                            f"({', '.join(self.input_names)}), got {len(inputs)}")
        values: dict[int, torch.Tensor] = {}
        for index, shape, x in zip(self._input_indices, self.input_shapes, inputs, strict=True):
            values[index] = x if self.layout == "nchw" else _to_internal_layout(x, shape)
        for step in self._steps:
            values[step.output] = self.ops[step.key](*(values[i] for i in step.inputs))
            for index in step.release:
                del values[index]
        return tuple(
            values[index] if self.layout == "nchw" else _to_tflite_layout(values[index], shape)
            for index, shape in zip(self._output_indices, self.output_shapes, strict=True)
        )


# --------------------------------------------------------------------------------------------
# BlazePose
# --------------------------------------------------------------------------------------------


class BlazePose(nn.Module):
    """BlazePose full (landmark model) as a frozen feature extractor.

    Input: ``[N, 3, 256, 256]`` RGB in 0..1, NCHW: the range MediaPipe's own pose graph feeds
    this file (its ImageToTensorCalculator float range is 0..1; the person detector's is -1..1).
    Give it the whole photo padded to a square and resized (a letterbox); no person crop needed.

    Output ``(landmarks, presence)``:

    - ``landmarks`` ``[N, 33, 5]``: per body landmark (:data:`LANDMARK_NAMES`) x and y in pixels
      of the 256-px input, z (same scale, relative depth, smaller = nearer the camera), then the
      visibility and presence LOGITS, as the file outputs them (sigmoid gives probabilities).
    - ``presence`` ``[N]``: the pose-presence PROBABILITY in 0..1 (the file ends that head in a
      LOGISTIC op); MediaPipe treats < 0.5 as "no person".

    Only the landmark and presence heads are built: the segmentation mask, heatmap and world
    landmark outputs are skipped, which cuts the CPU time by about 30% (17 -> 12 ms a photo).
    """

    def __init__(self, graph: TFLiteGraph) -> None:
        super().__init__()
        expected = {_INPUT: (1, INPUT_SIZE, INPUT_SIZE, 3),
                    _LANDMARKS_OUTPUT: (1, _FILE_LANDMARKS * len(LANDMARK_FIELDS)),
                    _PRESENCE_OUTPUT: (1, 1)}
        found = dict(zip(graph.input_names + graph.output_names,
                         graph.input_shapes + graph.output_shapes, strict=True))
        if (graph.layout != "nchw" or graph.output_names != (_LANDMARKS_OUTPUT, _PRESENCE_OUTPUT)
                or found != expected):
            raise ValueError(f"{graph.path}: not a BlazePose landmark model read with "
                             f"layout='nchw' and outputs ({_LANDMARKS_OUTPUT}, "
                             f"{_PRESENCE_OUTPUT}); expected tensors {expected}, found {found}")
        # Not named `graph`: an exported torch.fx GraphModule reserves that attribute.
        self.net = graph
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_tflite(cls, path: str | Path) -> BlazePose:
        """Read BlazePose from a landmark model file such as ``pose_landmark_full.tflite``."""
        return cls(TFLiteGraph(path, outputs=(_LANDMARKS_OUTPUT, _PRESENCE_OUTPUT),
                               layout="nchw"))

    def train(self, mode: bool = True) -> BlazePose:
        """Stays in eval mode: a parent's ``.train()`` must not unfreeze a fixed extractor."""
        return super().train(False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.dim() != 4 or tuple(image.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"BlazePose: expected [N, 3, {INPUT_SIZE}, {INPUT_SIZE}] RGB 0..1, "
                             f"got {list(image.shape)}")
        flat, presence = self.net(image)
        landmarks = flat.reshape(-1, _FILE_LANDMARKS, len(LANDMARK_FIELDS))[:, :NUM_LANDMARKS]
        return landmarks, presence.reshape(-1)


def load_blazepose(weights_path: str | None = None) -> BlazePose:
    """BlazePose from ``weights_path`` (a local .tflite file) or, by default, the mediapipe
    wheel's ``pose_landmark_full.tflite``."""
    return BlazePose.from_tflite(resolve_weights(weights_path))
