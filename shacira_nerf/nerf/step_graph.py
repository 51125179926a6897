"""``--pipeline.model.cuda-graph``: each training step's forward and backward pass replayed as CUDA graphs.

Why: on a GPU a shacira step is bound by the host, not the GPU (an H200 step: 37 ms of wall time, 11 ms of GPU work
in ~1100 kernels, benchmarks/README.md): Python and the launches of nerfstudio's samplers, fields, renderers and
losses take longer than the kernels themselves. A CUDA graph records the kernels of one forward pass (proposal
sampling, the fields and their grids, rendering, the losses, the rate) and of its backward pass once, then replays
each with a single launch.

What makes a step recordable: with nerfstudio's fixed sample counts every tensor of a training step has the same
shape every step; every number that changes between steps lives in device memory (the quantizer's temperature or
sharpness, ``AnnealedQuantizer.scalars_on_device``; the proposal weights' annealing exponent and the host constants
of ``capturable.py``); and the step takes one of few branches: whether nerfacto's schedule trains the proposal
networks this step, and whether the quantizer still anneals. One pair of graphs is captured per branch when it is
first needed (a few seconds each); a branch the schedule has left behind (annealing, once it ends) is freed. Random
numbers (SGA's noise, the samplers' jitter) come from torch's CUDA generator, which draws new ones at every replay.

What stays eager: the data manager (pixel sampling and ray generation), the loss sum and the backward call the
trainer makes (it reaches the graphed backward through autograd), the gradient scaler, the optimizers, callbacks,
evaluation and rendering. Not with data-parallel training (several GPUs) or ``compile``.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from nerfstudio.cameras.rays import RayBundle
from torch import Tensor, nn

RAY_FIELDS = ("origins", "directions", "pixel_area", "camera_indices", "nears", "fars", "times")
"""The RayBundle tensors a graph takes as inputs (those that are set), then its metadata by key."""

MAX_GRAPHS = 8
"""Captured branches kept at most; a step whose inputs would need another runs eagerly (and says so once)."""


@dataclass(frozen=True)
class InputLayout:
    """Which tensors a step hands the graph, in order, with their shapes and dtypes (a graph replays one layout)."""

    ray_fields: Tuple[str, ...]
    metadata_keys: Tuple[str, ...]
    batch_keys: Tuple[str, ...]
    signature: Tuple[Tuple[Tuple[int, ...], torch.dtype], ...]

    @staticmethod
    def of(ray_bundle: RayBundle, batch: Dict) -> Tuple["InputLayout", List[Tensor]]:
        fields = tuple(f for f in RAY_FIELDS if getattr(ray_bundle, f) is not None)
        metadata = tuple(sorted(k for k, v in (ray_bundle.metadata or {}).items() if isinstance(v, Tensor)))
        batch_keys = tuple(sorted(k for k, v in batch.items() if isinstance(v, Tensor)))
        tensors = [getattr(ray_bundle, f) for f in fields]
        tensors += [ray_bundle.metadata[k] for k in metadata] + [batch[k] for k in batch_keys]
        signature = tuple((tuple(t.shape), t.dtype) for t in tensors)
        return InputLayout(fields, metadata, batch_keys, signature), tensors

    def unflatten(self, tensors: Tuple[Tensor, ...]) -> Tuple[RayBundle, Dict[str, Tensor]]:
        n, m = len(self.ray_fields), len(self.metadata_keys)
        ray_bundle = RayBundle(**dict(zip(self.ray_fields, tensors[:n])))  # type: ignore[arg-type]
        ray_bundle.metadata = dict(zip(self.metadata_keys, tensors[n : n + m]))
        return ray_bundle, dict(zip(self.batch_keys, tensors[n + m :]))


@dataclass
class _Outputs:
    """The names of a graph's outputs: loss terms first, then the metrics that are tensors."""

    loss_keys: Tuple[str, ...] = ()
    metric_keys: Tuple[str, ...] = ()
    host_metrics: Tuple[str, ...] = field(default_factory=tuple)


class TrainingLosses(nn.Module):
    """The model's training losses and tensor metrics as a function of tensors: what a graph records.

    The same calls nerfstudio's ``VanillaPipeline.get_train_loss_dict`` makes (the model's forward, then
    ``get_metrics_dict`` and ``get_loss_dict``), on a ray bundle and batch rebuilt from the input tensors.
    """

    def __init__(self, model: nn.Module, layout: InputLayout) -> None:
        super().__init__()
        self.model = model
        self.layout = layout
        self.names = _Outputs()

    def forward(self, *tensors: Tensor) -> Tuple[Tensor, ...]:
        ray_bundle, batch = self.layout.unflatten(tensors)
        outputs = self.model(ray_bundle)
        metrics = self.model.get_metrics_dict(outputs, batch)
        losses = self.model.get_loss_dict(outputs, batch, metrics)
        tensor_metrics = {k: v for k, v in metrics.items() if isinstance(v, Tensor)}
        self.names = _Outputs(
            tuple(losses), tuple(tensor_metrics), tuple(k for k in metrics if k not in tensor_metrics)
        )
        return tuple(losses.values()) + tuple(tensor_metrics.values())

    def on_parameter_aliases(self) -> Tuple[Callable[..., Tuple[Tensor, ...]], Tuple[Tensor, ...], Tuple[Tensor, ...]]:
        """(function of (inputs, aliases), the aliases, the parameters): ``forward`` with every parameter replaced by
        an alias, a new leaf tensor on the same memory.

        Why: a capture computes the parameters' gradients with ``torch.autograd.grad``, which runs each
        parameter's gradient accumulator on the CUDA stream the accumulator was created on. Accumulators live as
        long as a graph of an earlier step does (nerfstudio's trainer holds the previous step's loss through the
        next step), and those were made on the default stream, which a capture on its own stream may not touch
        (CUDA: "operation would make the legacy stream depend on a capturing blocking stream"). An alias's
        accumulator is made during the capture, on its stream.

        Not ``torch.func.functional_call``: a module registered under two names (a proposal network's grid is its
        ``encoding`` and its ``mlp_base.0``) came back from it holding the aliases instead of its parameters, so the
        next capture aliased the aliases and the optimizer's parameters stopped receiving those gradients.
        """
        params = tuple(self.parameters())
        aliases = tuple(p.detach().requires_grad_(p.requires_grad) for p in params)

        def recorded(*inputs_and_aliases: Tensor) -> Tuple[Tensor, ...]:
            split = len(inputs_and_aliases) - len(aliases)
            inputs, swapped = inputs_and_aliases[:split], inputs_and_aliases[split:]
            with parameters_replaced(self, dict(zip(map(id, params), swapped))):
                return self(*inputs)

        return recorded, aliases, params

    def split(self, values: Tuple[Tensor, ...]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """(loss dict, metrics dict) from a graph's outputs (metrics detached: the logs turn them into floats)."""
        n = len(self.names.loss_keys)
        losses = dict(zip(self.names.loss_keys, values[:n]))
        metrics = {k: v.detach() for k, v in zip(self.names.metric_keys, values[n:])}
        return losses, metrics


class StepGraphs:
    """The captured branches of one model's training step, and the choice of branch each step.

    Args:
        model: a ``ShaciraModel`` on a CUDA device, in training mode.
        branch: the model's per-step branch key (the proposal update flag, the annealing phase); given the step's
            branch, ``force`` puts the model's Python state into it for a capture and returns a function that puts
            the state back.
        force: see ``branch``.
        after_step: called after each replay with the branch it took (the proposal sampler's counters move here:
            the replay does not run the Python that moves them).
    """

    def __init__(
        self,
        model: nn.Module,
        branch: Callable[[], Tuple],
        force: Callable[[Tuple], Callable[[], None]],
        after_step: Callable[[Tuple], None],
    ) -> None:
        self.model = model
        self.branch = branch
        self.force = force
        self.after_step = after_step
        self.graphs: Dict[Tuple, Tuple[TrainingLosses, Callable]] = {}
        self.eager_reason: Optional[str] = None
        """Why steps run eagerly from now on (set once, never cleared); ``reason_said``: whether it was printed."""
        self.reason_said = False
        self.captures = 0

    def losses(self, ray_bundle: RayBundle, batch: Dict) -> Optional[Tuple[Dict[str, Tensor], Dict[str, Tensor]]]:
        """This step's (loss dict, tensor metrics) from the graph of its branch; None: run this step eagerly."""
        if self.eager_reason is not None:
            return None
        layout, tensors = InputLayout.of(ray_bundle, batch)
        branch = self.branch()
        key = (branch, layout)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= MAX_GRAPHS:
                self.eager_reason = f"more than {MAX_GRAPHS} input layouts or branches"
                return None
            self._drop_stale(branch)
            entry = self._capture(key, layout, tensors)
        wrapper, graphed = entry
        values = graphed(*tensors)
        self.after_step(branch)
        return wrapper.split(values)

    def _drop_stale(self, branch: Tuple) -> None:
        """Free graphs of an annealing phase that is over (the last element of a branch key)."""
        for key in [k for k in self.graphs if k[0][-1] != branch[-1]]:
            del self.graphs[key]

    def _capture(self, key: Tuple, layout: InputLayout, tensors: List[Tensor]) -> Tuple[TrainingLosses, Callable]:
        device = torch.device("cuda", torch.cuda.current_device())
        static = tuple(t.detach().to(device).clone() for t in tensors)
        wrapper = TrainingLosses(self.model, layout)
        recorded, aliases, params = wrapper.on_parameter_aliases()
        restore = self.force(key[0])
        clear_step_caches(self.model)
        dtype = torch.get_autocast_dtype("cuda")
        try:
            # The trainer's autocast caches casts between calls, which a graph cannot replay: caching off here.
            with torch.autocast("cuda", dtype=dtype, enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False):
                graphed_fn = make_graphed_thread_local(recorded, static + aliases)
        finally:
            restore()
            clear_step_caches(self.model)

        def graphed(*inputs: Tensor) -> Tuple[Tensor, ...]:
            # The parameters themselves stand where their aliases were recorded (the same memory, so nothing is
            # copied): the replay's backward hands them their gradients.
            return graphed_fn(*inputs, *params)

        self.captures += 1
        self.graphs[key] = (wrapper, graphed)
        return wrapper, graphed


class _ThreadLocalCapture(torch.cuda.graph):
    """``torch.cuda.graph`` whose capture mode defaults to "thread_local" (``make_graphed_thread_local``)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        kwargs.setdefault("capture_error_mode", "thread_local")
        super().__init__(*args, **kwargs)


def make_graphed_thread_local(function: Callable[..., Tuple[Tensor, ...]], sample_args: Tuple[Tensor, ...]) -> Callable:
    """``torch.cuda.make_graphed_callables(function, sample_args)``, its captures in CUDA's "thread_local" mode.

    Why: in the default "global" mode a call CUDA deems unsafe during a capture (allocating page-locked memory, a
    synchronizing copy) made by *any* thread of the process invalidates the capture, and the step fails. nerfstudio's
    trainer has such threads beside the training loop (data loaders pinning batches in the background); only this
    thread's work is recorded, so only this thread's calls need to be checked. torch releases since pytorch#188832
    take the mode as an argument; older ones (the H200's 2.11) get it as the default of the ``torch.cuda.graph``
    that ``make_graphed_callables`` opens, for the duration of this call.
    """
    if "capture_error_mode" in inspect.signature(torch.cuda.make_graphed_callables).parameters:
        return torch.cuda.make_graphed_callables(
            function, sample_args, allow_unused_input=True, capture_error_mode="thread_local"
        )
    original = torch.cuda.graph
    torch.cuda.graph = _ThreadLocalCapture  # type: ignore[misc]
    try:
        return torch.cuda.make_graphed_callables(function, sample_args, allow_unused_input=True)
    finally:
        torch.cuda.graph = original  # type: ignore[misc]


@contextmanager
def parameters_replaced(module: nn.Module, replacement: Dict[int, Tensor]) -> Iterator[None]:
    """Within the block, every parameter slot of ``module`` and its submodules holds ``replacement[id(parameter)]``;
    after it, each slot holds its parameter again.

    Each submodule is visited once however many names it has, and each slot is restored exactly, so a module shared
    under two names, or a parameter tied between modules, comes back as it was.
    """
    saved: List[Tuple[nn.Module, str, nn.Parameter]] = []
    try:
        for sub in module.modules():
            for name, param in sub._parameters.items():
                if param is not None and id(param) in replacement:
                    saved.append((sub, name, param))
        for sub, name, param in saved:
            sub._parameters[name] = replacement[id(param)]  # type: ignore[assignment]
        yield
    finally:
        for sub, name, param in saved:
            sub._parameters[name] = param


def clear_step_caches(model: nn.Module) -> None:
    """Forget every grid's step-scoped quantized table: a capture must record the quantization, and eager code after
    it must not read a table that lives in a graph's memory."""
    for module in model.modules():
        if hasattr(module, "_table_cache"):
            module._table_cache = None
