"""ONNX Runtime sessions run with I/O binding on torch tensors: inputs and outputs stay where they are.

A graph's inputs and outputs are bound by pointer to torch tensors on the rollout's device, so
nothing is copied per step: on CUDA the KV cache never leaves the GPU (the CUDA execution
provider runs on torch's current stream, so no extra synchronisation is needed); on CPU, ORT
reads and writes the torch tensors' memory directly. The CUDA path needs a CUDA build of torch
and onnxruntime-gpu; it is written but was not run on a GPU (none was available).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

INSTALL_HINT = 'pip install -e ".[cpu]" (CPU) or pip install -e ".[gpu]" (CUDA; the two extras exclude each other)'
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
_ELEMENT = {torch.float32: np.float32, torch.int64: np.int64, torch.bool: np.bool_, torch.uint8: np.uint8}


def import_onnxruntime():
    """onnxruntime, or an ImportError that names the extra to install."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"the ONNX backend needs onnxruntime, which is not installed: {INSTALL_HINT}") from e
    return onnxruntime


def choose_provider(device: torch.device) -> tuple[str, torch.device]:
    """The execution provider for `device` and the device the rollout's tensors then live on.

    CUDA when the device is a GPU and both onnxruntime (CUDAExecutionProvider) and torch can use
    it; otherwise the CPU provider on the CPU, with a warning naming what was missing.
    """
    ort = import_onnxruntime()
    if device.type == "cpu":
        return CPU, device
    if device.type != "cuda":
        raise ValueError(f"the ONNX backend runs on cpu or cuda devices, got {str(device)!r}")
    available = ort.get_available_providers()
    if CUDA not in available:
        why = f"{CUDA} is not available in this onnxruntime (it has {available}; for CUDA: pip install -e \".[gpu]\")"
    elif not torch.cuda.is_available():
        why = f"{CUDA} needs a CUDA build of torch with a visible GPU (torch {torch.__version__} sees none)"
    else:
        return CUDA, device
    warnings.warn(f"{why}; falling back to {CPU}", stacklevel=3)
    return CPU, torch.device("cpu")


OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def session_options(threads: int | None = None, tuning: dict | None = None):
    """ORT SessionOptions: `threads` intra-op threads (torch's count if None), one inter-op thread, errors-only
    logging, then `tuning`: SessionOptions attributes by name (`graph_optimization_level` as disable, basic,
    extended or all; `enable_mem_pattern`, `enable_cpu_mem_arena`, `enable_profiling`, `profile_file_prefix`, ...)
    and session config entries by their dotted key (`session.intra_op.allow_spinning`: "0" or "1", ...)."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    # idle intra-op threads sleep rather than spin: the env's three sessions and the torch work between their calls
    # share the cores (at 2 threads 1.26x the env's frames/s at batch 1, 1.04x at batch 64; docs/experiments/rollout-speed.md)
    tuning = {"session.intra_op.allow_spinning": "0", **(tuning or {})}
    for key, value in tuning.items():
        if "." in key:
            opts.add_session_config_entry(key, str(value))
        elif key == "graph_optimization_level":
            if value not in OPT_LEVELS:
                raise ValueError(f"graph_optimization_level {value!r} is not one of {list(OPT_LEVELS)}")
            opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[value])
        elif key.startswith("_") or not hasattr(opts, key):
            raise ValueError(f"{key!r} is not an onnxruntime SessionOptions attribute or a dotted session config key")
        else:
            setattr(opts, key, value)
    return opts


def open_graphs(paths: dict[str, Path], device: torch.device, threads: int | None = None,
                tuning: dict | None = None, batches: dict[str, tuple[tuple[int, ...], bool]] | None = None) -> dict[str, OnnxGraph]:
    """Sessions for the graph files `paths` (by name) on `device`, all on one provider.

    `batches`: per graph name, (the batch sizes it gets a session of its own for, whether it keeps
    one for any other batch): `OnnxGraph`'s `batches` and `dynamic`. A graph not named: one
    session for any batch.

    A provider that is missing, or that onnxruntime lists but cannot create (onnxruntime-gpu
    without its CUDA libraries logs an error and runs on the CPU), gives a warning naming it and
    the CPU provider.
    """
    provider, device = choose_provider(device)
    batches = batches or {}

    def graph(name: str, path: Path, provider: str, device: torch.device) -> OnnxGraph:
        sizes, dynamic = batches.get(name, ((), True))
        return OnnxGraph(path, provider, device, threads, tuning, sizes, dynamic)

    graphs = {name: graph(name, path, provider, device) for name, path in paths.items()}
    if any(g.provider != provider for g in graphs.values()):
        warnings.warn(f"{provider} could not be created (see onnxruntime's log); falling back to {CPU}", stacklevel=2)
        graphs = {name: graph(name, path, CPU, torch.device("cpu")) for name, path in paths.items()}
    return graphs


class OnnxGraph:
    """One exported graph, called with dicts of torch tensors: an InferenceSession per batch size it was opened for.

    A graph exported with a dynamic batch axis spends much of a small batch's time on shape arithmetic
    (Shape, Gather, Unsqueeze, Concat, Expand: two thirds of the chunk graph's 2,678 nodes after ONNX
    Runtime's optimisations). A session whose batch axis is fixed at load (ONNX Runtime's
    free-dimension override) folds all of it into constants (894 nodes at batch 1): the chunk step at
    batch 1 in 0.8x the time. At batch 64 the same session ran 1.1x slower (its MatMul and Add fused
    into Gemm, and more), so it is for small batches. `batches` opens one session per size the caller
    will use, and `dynamic` keeps one for any other size; a call goes to the session of its batch
    (the first input with a "batch" axis tells it).
    """

    def __init__(self, path: str | Path, provider: str, device: torch.device, threads: int | None = None, tuning: dict | None = None,
                 batches: tuple[int, ...] = (), dynamic: bool = True):
        ort = import_onnxruntime()
        if not batches and not dynamic:
            raise ValueError("a graph needs a session: give it batch sizes or keep the dynamic one")
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
            raise ValueError(f"batch sizes must be positive ints, got {batches}")
        providers: list = [CPU]
        if provider == CUDA:
            index = device.index if device.index is not None else torch.cuda.current_device()
            device = torch.device("cuda", index)
            stream = torch.cuda.current_stream(device).cuda_stream
            providers = [(CUDA, {"device_id": index, "user_compute_stream": str(stream)}), CPU]

        def open_session(batch: int | None):
            opts = session_options(threads, tuning)
            if batch is not None:
                opts.add_free_dimension_override_by_name("batch", batch)
            return ort.InferenceSession(str(path), opts, providers=providers)

        self.sessions = {b: open_session(b) for b in dict.fromkeys(batches)}
        if dynamic:
            self.sessions[None] = open_session(None)
        self.session = self.sessions.get(None) or next(iter(self.sessions.values()))  # the any-batch one where kept
        self.provider = self.session.get_providers()[0]
        self.device = device
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._batch_axis = _batch_axis(path)

    def _bind(self, bind, name: str, t: torch.Tensor) -> None:
        if t.dtype not in _ELEMENT:
            raise TypeError(f"{name}: dtype {t.dtype} cannot be bound; the graphs take {list(_ELEMENT)}")
        if t.device != self.device or not t.is_contiguous():
            raise ValueError(f"{name}: expected a contiguous tensor on {self.device}, got {t.device}")
        bind(name, self.device.type, self.device.index or 0, _ELEMENT[t.dtype], tuple(t.shape), t.data_ptr())

    def _session_for(self, inputs: dict[str, torch.Tensor]):
        batch = None if self._batch_axis is None else int(inputs[self._batch_axis[0]].shape[self._batch_axis[1]])
        session = self.sessions.get(batch) or self.sessions.get(None)
        if session is None:
            raise ValueError(f"this graph was opened for batches {sorted(self.sessions)} only, got a batch of {batch}")
        return session

    def __call__(self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        """Run the graph reading `inputs` and writing into the preallocated `outputs` (by name)."""
        if set(inputs) != set(self.inputs) or set(outputs) != set(self.outputs):
            raise ValueError(f"graph takes {self.inputs} and gives {self.outputs}; got {sorted(inputs)} and {sorted(outputs)}")
        session = self._session_for(inputs)
        binding = session.io_binding()
        inputs = {k: v.contiguous() for k, v in inputs.items()}  # held until the run ends
        for name in self.inputs:
            self._bind(binding.bind_input, name, inputs[name])
        for name in self.outputs:
            self._bind(binding.bind_output, name, outputs[name])
        session.run_with_iobinding(binding)


def _batch_axis(path: str | Path) -> tuple[str, int] | None:
    """The first input of a graph file with a dynamic axis named "batch", and that axis (None: none has one).

    Read from the file: a session with the axis fixed reports its size instead of its name."""
    import onnx

    for i in onnx.load(str(path), load_external_data=False).graph.input:
        names = [d.dim_param for d in i.type.tensor_type.shape.dim]
        if "batch" in names:
            return i.name, names.index("batch")
    return None
