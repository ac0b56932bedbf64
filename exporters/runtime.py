"""``OrtC2F``: run an exported C2F graph in onnxruntime, on TensorRT, CUDA or CPU.

onnxruntime silently drops an execution provider that cannot load (missing CUDA libraries, no
GPU) and runs on the CPU instead. This wrapper checks the providers the session really got: an
explicitly requested provider that is not active is an error; with ``providers=None`` the
fastest one that loads is used and ``.providers`` says which.

One ``OrtC2F`` holds one session: build it once and call it for every batch (building a session
optimizes the graph and, for INT8/FP16, repacks the weights; that is seconds, not milliseconds).

Threads on the CPU: without ``session_options``, onnxruntime runs each operator on an intra-op
pool of one thread per physical core (``intra_op_num_threads = 0``), and the operators of the
graph one after the other (sequential execution, so the inter-op pool is unused). To share the
CPU with other work, or to compare with PyTorch on the same budget, pass ``ort.SessionOptions()``
with ``intra_op_num_threads`` set (``bench/test_bench_ort.py`` sets it to
``torch.get_num_threads()``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from c2f_attacks.errors import UserError
from c2f_attacks.exporters.errors import OnnxModelError, ProviderUnavailableError
from c2f_attacks.exporters.finite import check_finite_onnx
from c2f_attacks.exporters.graph import OUTPUT_NAMES
from c2f_attacks.models.base import C2FOutput

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = (TRT, CUDA)

#: a provider name, or ``(name, options)`` as onnxruntime takes them
ProviderSpec = str | tuple[str, dict]


class OrtC2F:
    """An onnxruntime session over an exported C2F graph (see :func:`exporters.export_onnx`).

    ``model`` is a file or the serialized graph itself (``bytes``, e.g. from
    ``to_onnx(model).SerializeToString()``; :meth:`from_bytes`), which builds the session
    without any file. A graph whose weights hold NaN or inf is refused (see
    :mod:`c2f_attacks.exporters.finite`), as is one that is not a C2F graph.

    ``OrtC2F(path)(x)`` takes a torch tensor or NumPy array (N, C, H, W) of any N (run in chunks
    of ``batch_size``) and returns a :class:`C2FOutput` of torch tensors on ``x``'s device.

    ``providers=None`` asks for TensorRT, then CUDA, then CPU in one session; onnxruntime keeps
    those that load. An explicit list (names or ``(name, options)``) must load completely or
    :class:`ProviderUnavailableError` is raised. TensorRT gets FP16 (``trt_fp16``), an engine
    cache (``trt_cache_dir``) and a batch profile 1..``batch_size``; the options a caller gives
    for a provider override these.

    ``io_binding``: ORT reads the input and writes the outputs in the torch tensors' own memory
    (IOBinding) instead of through NumPy arrays. None binds where it pays: torch CUDA tensors on
    CUDA/TensorRT, which then never leave the GPU. On the CPU a plain run copies nothing large
    either (the input is shared with NumPy, the outputs are a few logits per image), and binding
    measured no faster (``bench/test_bench_ort.py`` times both), so CPU tensors are bound only
    with ``io_binding=True``; ``False`` never binds.
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        providers: Sequence[ProviderSpec] | None = None,
        *,
        batch_size: int = 256,
        device_id: int = 0,
        trt_fp16: bool = False,
        trt_cache_dir: str | os.PathLike | None = None,
        session_options: ort.SessionOptions | None = None,
        io_binding: bool | None = None,
    ):
        if batch_size < 1:
            raise UserError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.io_binding = io_binding
        self.device_id = device_id
        self.name = "<in-memory ONNX model>" if isinstance(model, bytes) else str(model)
        proto = _read_proto(model, self.name)
        self.input_name, self.input_shape, self.num_coarse, self.num_fine = _check_io(
            proto, self.name
        )
        check_finite_onnx(proto, self.name)
        del proto  # the session holds its own copy of the weights
        defaults = self._default_options(trt_fp16, trt_cache_dir)
        requested = _normalize(providers, defaults)
        self._session = _create_session(model, requested, session_options, self.name)
        active = self._session.get_providers()
        if providers is not None:
            missing = [name for name, _ in requested if name not in active]
            if missing:
                raise ProviderUnavailableError(
                    f"{', '.join(missing)} requested for {self.name} but could not be loaded "
                    f"(onnxruntime fell back to {active}); check the GPU, CUDA/cuDNN/TensorRT "
                    "libraries, or ask for CPUExecutionProvider explicitly"
                )

    @classmethod
    def from_bytes(cls, data: bytes, providers: Sequence[ProviderSpec] | None = None, **options):
        """A session over a serialized graph held in memory; no file is read or written."""
        if not isinstance(data, bytes):
            raise TypeError(
                f"data must be the serialized ONNX graph (bytes), got {type(data).__name__}"
            )
        return cls(data, providers, **options)

    @property
    def providers(self) -> list[str]:
        """The execution providers active in the session, in priority order."""
        return self._session.get_providers()

    def _default_options(self, trt_fp16: bool, trt_cache_dir) -> dict[str, dict]:
        chw = "x".join(str(d) for d in self.input_shape[1:])
        trt = {
            "device_id": self.device_id,
            "trt_fp16_enable": trt_fp16,
            # One profile covering every chunk size, so TensorRT never rebuilds for a new batch.
            "trt_profile_min_shapes": f"{self.input_name}:1x{chw}",
            "trt_profile_opt_shapes": f"{self.input_name}:{self.batch_size}x{chw}",
            "trt_profile_max_shapes": f"{self.input_name}:{self.batch_size}x{chw}",
        }
        if trt_cache_dir is not None:
            Path(trt_cache_dir).mkdir(parents=True, exist_ok=True)
            trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache_dir))
        return {TRT: trt, CUDA: {"device_id": self.device_id}, CPU: {}}

    # ------------------------------------------------------------------ inference
    def __call__(self, x: torch.Tensor | np.ndarray) -> C2FOutput:
        x = self._check_input(x)
        chunks = [
            self._run(x[i : i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)
        ]
        out = [torch.cat(parts) for parts in zip(*chunks)]
        return C2FOutput(*out)

    def _check_input(self, x) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"images must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}"
            )
        expected = ("N", *self.input_shape[1:])
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.input_shape[1:]):
            raise UserError(
                f"images of shape {tuple(x.shape)} do not fit {self.name}, which takes "
                f"{expected} (N any)"
            )
        if x.shape[0] == 0:
            raise UserError("images is an empty batch")
        if not x.is_floating_point():
            raise UserError(f"images must be floating point in [0, 1], got dtype {x.dtype}")
        return x.detach().float().contiguous()

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.io_binding is not False:
            if x.is_cuda and self.providers[0] in GPU_PROVIDERS:
                return self._run_bound(x, "cuda", self._cuda_index(x))
            if self.io_binding and x.device.type == "cpu":
                return self._run_bound(x, "cpu", 0)
        outputs = self._session.run(list(OUTPUT_NAMES), {self.input_name: x.cpu().numpy()})
        return tuple(torch.from_numpy(o).to(x.device) for o in outputs)

    def _cuda_index(self, x: torch.Tensor) -> int:
        index = x.device.index if x.device.index is not None else torch.cuda.current_device()
        if index != self.device_id:
            raise ValueError(
                f"images are on cuda:{index} but the session for {self.name} runs on "
                f"cuda:{self.device_id} (pass device_id={index})"
            )
        return index

    def _run_bound(self, x: torch.Tensor, device: str, index: int) -> tuple[torch.Tensor, ...]:
        """IOBinding: ORT reads ``x`` and writes the outputs where they lie (``device``), no
        copies through host arrays."""
        n = x.shape[0]
        outputs = (
            torch.empty(n, self.num_coarse, dtype=torch.float32, device=x.device),
            torch.empty(n, self.num_fine, dtype=torch.float32, device=x.device),
            torch.empty(n, dtype=torch.int64, device=x.device),
            torch.empty(n, dtype=torch.int64, device=x.device),
        )
        binding = self._session.io_binding()
        binding.bind_input(self.input_name, device, index, np.float32, tuple(x.shape), x.data_ptr())
        for name, t in zip(OUTPUT_NAMES, outputs):
            dtype = np.float32 if t.is_floating_point() else np.int64
            binding.bind_output(name, device, index, dtype, tuple(t.shape), t.data_ptr())
        if x.is_cuda:  # ORT runs on its own stream: the kernels that produced x must have finished
            torch.cuda.current_stream(x.device).synchronize()
        self._session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return outputs


# ---------------------------------------------------------------------- loading
def _read_proto(model: str | os.PathLike | bytes, name: str) -> onnx.ModelProto:
    if not isinstance(model, bytes):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} does not exist")
    try:
        if isinstance(model, bytes):
            return onnx.load_from_string(model)
        return onnx.load(str(model), load_external_data=False)
    except Exception as err:  # protobuf DecodeError and friends share no useful base class
        raise OnnxModelError(
            f"{name} is not a readable ONNX model (truncated or corrupt?): "
            f"{type(err).__name__}: {str(err).strip()[:200]}"
        ) from None


def _check_io(proto: onnx.ModelProto, name: str) -> tuple[str, tuple, int, int]:
    """Input name, input shape (batch dim as -1), number of coarse and fine classes."""
    init = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in init]
    outputs = {o.name: o for o in proto.graph.output}
    if len(inputs) != 1:
        raise OnnxModelError(
            f"{name} is not a C2F graph: it must have one image input, "
            f"has {[i.name for i in inputs]}"
        )
    dims = _dims(inputs[0])
    if (
        len(dims) != 4
        or any(d < 1 for d in dims[1:])
        or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT
    ):
        raise OnnxModelError(
            f"{name} is not a C2F graph: its input {inputs[0].name!r} must be float32 "
            f"(N, C, H, W) with fixed C, H, W; it is {_describe(inputs[0])}"
        )
    missing = [o for o in OUTPUT_NAMES if o not in outputs]
    if missing:
        raise OnnxModelError(
            f"{name} is not a C2F graph: outputs {missing} are missing "
            f"(it has {list(outputs)}; expected {list(OUTPUT_NAMES)})"
        )
    classes = [_dims(outputs[o]) for o in OUTPUT_NAMES[:2]]
    if any(len(d) != 2 or d[1] < 1 for d in classes):
        raise OnnxModelError(
            f"{name} is not a C2F graph: coarse_logits and fine_logits must be (N, classes) with "
            f"a fixed number of classes; they are {_describe(outputs['coarse_logits'])} and "
            f"{_describe(outputs['fine_logits'])}"
        )
    return inputs[0].name, (-1, *dims[1:]), classes[0][1], classes[1][1]


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    """Static sizes, -1 where a dimension is symbolic or unknown."""
    return [
        d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim
    ]


def _describe(value: onnx.ValueInfoProto) -> str:
    dtype = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)
    return f"{dtype} {tuple(d if d >= 0 else '?' for d in _dims(value))}"


def _normalize(
    providers: Sequence[ProviderSpec] | None, defaults: dict[str, dict]
) -> list[tuple[str, dict]]:
    available = ort.get_available_providers()
    if providers is None:
        # Without a visible CUDA device the GPU providers can only fail, and onnxruntime prints
        # every failed library load in red: ask for them only where a GPU is present.
        wanted = (TRT, CUDA, CPU) if torch.cuda.is_available() else (CPU,)
        return [(p, defaults[p]) for p in wanted if p in available]
    if isinstance(providers, str):
        providers = [providers]
    requested = []
    for spec in providers:
        name, options = (spec, {}) if isinstance(spec, str) else spec
        if name not in available:
            raise ProviderUnavailableError(
                f"execution provider {name!r} is not in this onnxruntime build "
                f"(available: {available})"
            )
        if name in GPU_PROVIDERS and not torch.cuda.is_available():
            # Asked of a GPU build without a GPU, onnxruntime either falls back to the CPU or,
            # in some releases (onnxruntime-gpu 1.19), crashes the process while loading CUDA.
            raise ProviderUnavailableError(
                f"{name} requested but no CUDA device is visible to this process; ask for "
                "CPUExecutionProvider explicitly"
            )
        requested.append((name, {**defaults.get(name, {}), **options}))
    return requested


def _create_session(
    model, requested: list[tuple[str, dict]], options: ort.SessionOptions | None, name: str
) -> ort.InferenceSession:
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(
            source,
            sess_options=options,
            providers=[p for p, _ in requested],
            provider_options=[o for _, o in requested],
        )
    except Exception as err:  # ORT's pybind errors share no useful base class
        raise OnnxModelError(
            f"onnxruntime {ort.__version__} cannot load {name}: {_shorten(str(err).strip())}"
        ) from None


def _shorten(message: str, head: int = 120, tail: int = 240) -> str:
    # ORT puts a long C++ signature in the middle; the reason ("Unsupported model IR version: 14")
    # is at the end.
    return message if len(message) <= head + tail else f"{message[:head]} ... {message[-tail:]}"
