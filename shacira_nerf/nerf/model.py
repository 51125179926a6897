"""ShaciraModel: nerfacto with every hash grid a SHACIRA grid, and lambda x bits in the loss.

nerfacto's rendering, losses and metrics are inherited unchanged; ``populate_modules`` builds the same modules as
nerfacto's but with SHACIRA grids in the main field and in every proposal network, without the stock grids and
without building LPIPS (see ``lpips.py``). The rate term is the estimated bits of all grids' quantized latents,
normalised per latent as in the appendix's eq. 3: ``rate_loss = rate_lambda * total_bits / total_latents``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.field_components.spatial_distortions import SceneContraction
from nerfstudio.model_components.losses import MSELoss
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, NormalsRenderer
from nerfstudio.model_components.scene_colliders import NearFarCollider
from nerfstudio.model_components.shaders import NormalsShader
from nerfstudio.models.base_model import Model
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.nn import Parameter

from shacira_nerf.codec import pack_array
from shacira_nerf.core.entropy_model import ENTROPY_MODELS
from shacira_nerf.core.grid import ShaciraGrid
from shacira_nerf.core.lookup import LOOKUP_CHOICES, LookupBackendError, available_backends
from shacira_nerf.core.precision import NETWORK_PRECISIONS, round_to_precision_, stored_network_bytes
from shacira_nerf.core.quantizer import QUANTIZER_MODES, AnnealedQuantizer
from shacira_nerf.errors import UserError
from shacira_nerf.nerf.capturable import (
    BatchPSNR,
    ResidentCameraOptimizer,
    ResidentProposalSampler,
    ResidentRGBRenderer,
    ResidentUniformSampler,
)
from shacira_nerf.nerf.compiled import compile_hot_paths
from shacira_nerf.nerf.fields import ShaciraDensityField, ShaciraNerfactoField, make_grid
from shacira_nerf.nerf.lpips import LazyLPIPS
from shacira_nerf.nerf.viewer_panel import SizePanel
from shacira_nerf.units import BYTES_PER_MB

_HERE = "cuda" if torch.cuda.is_available() else "cpu"

COMPILE_BACKEND = "inductor"
"""``torch.compile``'s backend for ``compile``: inductor (fused Triton kernels on a GPU, C++ on a CPU). The CPU tests
use "aot_eager", which captures the same graphs (forward and backward) without generating code."""
"""The device whose backends a bad ``implementation`` message lists."""


class ShaciraConfigError(UserError):
    """A SHACIRA config value is invalid; the message names the field. Not a ValueError, so that tyro lets it
    through to the plugin's one-line ``error:`` (tyro draws its own multi-line box around a ValueError)."""


CAMERA_RECORD_FLOATS = 18
"""Numbers a scene file stores per training camera (``scene_file.cameras_to_array``: the 3x4 pose, fx, fy, cx, cy,
width, height)."""


def stored_camera_bytes(num_cameras: int) -> int:
    """Bytes of a scene file's cameras section payload for ``num_cameras`` training cameras (``pack_array`` of an
    [N, 18] float32 array, what nerfstudio's float32 cameras are stored as; cameras that float32 would round are
    stored as float64, twice this). Known before training ends, so the size estimate counts them: on lego's 100
    cameras they are 7.2 kB, 2.7% of a 0.27 MB file."""
    head = len(pack_array(np.zeros((0, CAMERA_RECORD_FLOATS), np.float32)))
    return head + 4 * CAMERA_RECORD_FLOATS * int(num_cameras)


@dataclass
class ShaciraModelConfig(NerfactoModelConfig):
    """nerfacto's model config plus SHACIRA's compression settings."""

    _target: Type = field(default_factory=lambda: ShaciraModel)
    latent_dim: int = 2
    """Integer latents per hash-table row (the appendix uses 2 for 3D scenes)."""
    feature_dim: int = 4
    """Features per row and level after the decoder (the appendix uses 4 for 3D scenes)."""
    rate_lambda: float = 1e-3
    """Weight of the rate term: loss += rate_lambda x estimated bits per latent (appendix eq. 3); 0 disables it.
    1e-3: on lego (Blender flags, 3000 steps, all 200 test views) the default gives 29.25 dB in a 2.02 MB file, the
    best nerfacto's PSNR (29.24 dB, 44.07 MB of float16 grids); 3e-3 gives -0.7 dB at 1.02 MB, 1e-2 -1.9 dB at
    0.51 MB (benchmarks/README.md). At 20,000 steps it gives 31.66 dB in a 1.39 MB file against nerfacto's 31.37 dB
    (lr 3e-3): +0.29 dB, 19.9x smaller than nerfacto's grids in float16; 1e-2 there is -2.3 dB at 66x. For smaller
    files, shrink ``log2_hashmap_size`` first: at λ 1e-3 a 2^16 table gave 30.51 dB in 0.53 MB at 20k, +0.84 dB over
    a larger λ at the default table and the same size."""
    anneal_fraction: float = 0.7
    """Fraction of training with the annealed rounding stand-in (``quantizer``); straight-through rounding afterwards,
    so that the networks train on the integers the file stores. 0.7 (the appendix's soft rounding used 0.95): on 25
    lego validation views at 3000 steps (benchmarks/README.md) it gave +0.1 to +1.8 dB over 0.95 at λ 0 and 1e-2."""
    quantizer: str = "sga"
    """Rounding stand-in while annealing: "sga" (stochastic Gumbel annealing, the authors' public Kodak config and the
    image mode's default) or "soft_round" (Agustsson & Theis, deterministic; the appendix's). Soft rounding at the end
    of its schedule (sharpness 32) passes almost no gradient to a latent sitting on an integer (the slope there is
    ~1e-13); SGA's noise keeps one. Measured on 25 lego validation views at 3000 steps (benchmarks/README.md): SGA
    +1.8 dB at λ 1e-2 (28.10 against 26.30 dB, 3% smaller file) and +1.9 dB at λ 0."""
    sga_kernel: bool = False
    """With SGA on the Triton lookup: quantize each grid with one Triton kernel that draws its own noise
    (``core/triton_sga.py``) instead of ~27 torch kernels a step (SGA cost 2.8 ms of a 37 ms H200 step,
    benchmarks/README.md). Off until it has passed its reference test on a GPU (it has on CPUs, in Triton's
    interpreter); other backends ignore it, and so does ``cuda_graph``."""
    sga_temperature_start: float = 1.0
    """SGA's temperature at the first step (``quantizer`` "sga")."""
    sga_temperature_end: float = 0.1
    """SGA's temperature at the end of annealing (the authors' 0.1)."""
    soft_round_alpha_start: float = 1.0
    """Soft-rounding sharpness at the first step (small: nearly the identity)."""
    soft_round_alpha_end: float = 32.0
    """Soft-rounding sharpness at the end of annealing (large: nearly hard rounding)."""
    proposal_log2_hashmap_size: int = 0
    """log2 of the largest table of every proposal network's grid; 0 keeps each network's own in
    ``proposal_net_args_list`` (nerfacto's: 17). Why a flag of its own: the proposal grids only model coarse density,
    yet they are a growing part of small files (23% of a 0.53 MB lego file with 2^16 field tables,
    benchmarks/README.md), and nerfstudio's command line cannot set a key inside ``proposal_net_args_list``."""
    entropy_filters: Tuple[int, ...] = (3, 3, 3)
    """Hidden widths of each CDF MLP of the entropy model."""
    entropy_model: str = "factorized"
    """Which entropy model codes each grid's latents: "factorized" (one CDF per latent dimension, the appendix's) or
    "per_level" (one per level and latent dimension, tables stored per level). The default stays "factorized": refit
    on the H200 lego file's integers a per-level model codes 2.8% fewer file bytes, but trained from the start (3000
    steps, λ 1e-2, benchmarks/README.md) it gave a 37% larger file and a 9% slower step. (On the CPU toy scene with
    ``shacira-tiny`` it gave a 10% smaller file at +0.13 dB, at 1.9x the step: to be settled on lego at 20k.)"""
    network_precision: str = "float16"
    """How the scene file stores the networks (MLPs, latent decoders, the mean appearance embedding): "float16"
    halves their bytes; training rounds them to it after its last step, so the checkpoint, ns-eval and the file hold
    the same weights. "int8": each tensor as int8 values and one float32 scale, a quarter of their float32 bytes
    and half of float16's (the H200 lego file: PSNR +0.005 dB without retraining; benchmarks/README.md); tensors of
    at most 4 numbers stay float16. "float32": as trained."""
    entropy_refit_steps: int = 500
    """Steps fitting each grid's entropy model alone to its final integer latents after the last training step (the
    file's probability tables come from it; it stops early once converged); 0 keeps the model as trained."""
    compile: bool = False
    """Compile nerfacto's per-step functions (fields, uniform sampler, renderers) with ``torch.compile`` while
    training (``compiled.py``): fused kernels, for GPUs where the step's GPU work is the bottleneck. Off by default:
    on an H200, where the host's launches bound the step, it measured slower (47.3 against 39.5 ms). The first step
    takes a minute or two to compile; evaluation and rendering run uncompiled."""
    cuda_graph: Optional[bool] = None
    """Replay each training step's forward and backward pass as CUDA graphs (``step_graph.py``): one launch instead
    of ~1100, for GPUs where the host's launches bound the step (2.2x faster a step on an H200). None (the default):
    on where it is tested, training on a CUDA device with the Triton lookup, without ``compile`` and without the
    camera optimizer (not yet tested with graphs on a GPU: ``graphs_untested_because``); off elsewhere.
    True: required (an error without a CUDA device or with ``compile``); False: off. Never with several GPUs;
    ``sga_kernel`` is ignored under graphs (SGA's noise then comes from torch's CUDA generator). Each branch of the
    step (proposal networks trained or not; annealing or not) is captured when first needed, a few seconds each.
    Evaluation and rendering run eagerly."""
    size_update_every: int = 100
    """Steps between updates of the size estimate in the logs and the viewer panel."""
    implementation: str = "auto"  # type: ignore[assignment]  # a str, so that a bad value gets our one-line error
    """Grid lookup backend: "auto" (Triton kernels on CUDA, pure torch elsewhere: the fastest tested one), "torch",
    "triton" or "tcnn" (tiny-cuda-nn, only by name). MLPs are always torch."""

    def __post_init__(self) -> None:
        checks = [
            (self.rate_lambda >= 0, "rate_lambda", "must be >= 0", self.rate_lambda),
            (self.latent_dim >= 1, "latent_dim", "must be >= 1", self.latent_dim),
            (self.feature_dim >= 1, "feature_dim", "must be >= 1", self.feature_dim),
            (0.0 <= self.anneal_fraction <= 1.0, "anneal_fraction", "must be in [0, 1]", self.anneal_fraction),
            (self.soft_round_alpha_start > 0, "soft_round_alpha_start", "must be > 0", self.soft_round_alpha_start),
            (
                self.soft_round_alpha_end >= self.soft_round_alpha_start,
                "soft_round_alpha_end",
                "must be >= soft_round_alpha_start",
                self.soft_round_alpha_end,
            ),
            (
                self.quantizer in QUANTIZER_MODES,
                "quantizer",
                f"must be one of {', '.join(QUANTIZER_MODES)}",
                self.quantizer,
            ),
            (self.sga_temperature_end > 0, "sga_temperature_end", "must be > 0", self.sga_temperature_end),
            (
                self.sga_temperature_start >= self.sga_temperature_end,
                "sga_temperature_start",
                "must be >= sga_temperature_end",
                self.sga_temperature_start,
            ),
            (self.size_update_every >= 1, "size_update_every", "must be >= 1", self.size_update_every),
            (self.entropy_refit_steps >= 0, "entropy_refit_steps", "must be >= 0", self.entropy_refit_steps),
            (
                self.entropy_model in ENTROPY_MODELS,
                "entropy_model",
                f"must be one of {', '.join(ENTROPY_MODELS)}",
                self.entropy_model,
            ),
            (
                self.network_precision in NETWORK_PRECISIONS,
                "network_precision",
                f"must be one of {', '.join(NETWORK_PRECISIONS)}",
                self.network_precision,
            ),
            (
                self.implementation in LOOKUP_CHOICES,
                "implementation",
                f"must be one of {', '.join(LOOKUP_CHOICES)} (this machine has {', '.join(available_backends(_HERE))})",
                self.implementation,
            ),
            (not (self.cuda_graph is True and self.compile), "cuda_graph", "cannot be combined with compile", True),
            (self.num_levels >= 1, "num_levels", "must be >= 1", self.num_levels),
            (4 <= self.log2_hashmap_size <= 26, "log2_hashmap_size", "must be in [4, 26]", self.log2_hashmap_size),
            (
                self.proposal_log2_hashmap_size == 0 or 4 <= self.proposal_log2_hashmap_size <= 26,
                "proposal_log2_hashmap_size",
                "must be 0 (each proposal network's own) or in [4, 26]",
                self.proposal_log2_hashmap_size,
            ),
        ]
        for ok, name, rule, value in checks:
            if not ok:
                raise ShaciraConfigError(f"pipeline.model.{name} {rule}, got {value!r}")


def graphs_untested_because(
    device_type: str, compile: bool, implementations: List[str], camera_optimizer_mode: str
) -> Optional[str]:
    """Why training steps would not replay CUDA graphs by default (``cuda_graph`` None), or None where they do.

    Why: a fast path is the default only where it is tested against the eager step on a GPU
    (``tests/test_step_graph.py``). The camera optimizer (nerfacto's SO3xR3, on for every capture but the Blender
    scenes) makes the sample positions trainable, so the captured backward also runs the lookup's gradient in the
    points; that branch is fixed but not yet tested on a GPU, and such runs train eagerly until it is.
    """
    if device_type != "cuda":
        return "they need a CUDA device"
    if compile:
        return "pipeline.model.compile is on"
    if any(name != "triton" for name in implementations):
        return "they are tested with the Triton lookup only (pipeline.model.implementation)"
    if camera_optimizer_mode != "off":
        return (
            f"with the camera optimizer ({camera_optimizer_mode}) they are not yet tested on a GPU; "
            "--pipeline.model.cuda-graph True tries them, --pipeline.model.camera-optimizer.mode off turns it off"
        )
    return None


class ShaciraModel(NerfactoModel):
    """nerfacto on SHACIRA grids."""

    config: ShaciraModelConfig

    def populate_modules(self) -> None:
        Model.populate_modules(self)
        cfg = self.config
        scene_contraction = None if cfg.disable_scene_contraction else SceneContraction(order=float("inf"))
        # One quantizer schedule shared by all grids: they anneal together.
        self.quantizer = AnnealedQuantizer(
            cfg.soft_round_alpha_start, cfg.soft_round_alpha_end, cfg.anneal_fraction, mode=cfg.quantizer,  # type: ignore[arg-type]
            temperature_start=cfg.sga_temperature_start, temperature_end=cfg.sga_temperature_end,
        )  # fmt: skip

        # The lookup backend is resolved once, here, for the device the pipeline trains on (nerfstudio passes it).
        device = self.kwargs.get("device") or "cpu"
        if cfg.cuda_graph is True and torch.device(device).type != "cuda":
            raise ShaciraConfigError(
                f"pipeline.model.cuda_graph needs a CUDA device, and this model trains on {str(device)!r}"
            )

        def grid(num_levels: int, base_res: int, max_res: int, log2_hashmap_size: int) -> ShaciraGrid:
            try:
                return make_grid(
                    num_levels, base_res, max_res, log2_hashmap_size, cfg.latent_dim, cfg.feature_dim,
                    self.quantizer, cfg.implementation, tuple(cfg.entropy_filters), device, cfg.entropy_model,
                    cfg.sga_kernel,
                )  # fmt: skip
            except LookupBackendError as exc:
                raise ShaciraConfigError(f"pipeline.model.implementation {cfg.implementation!r}: {exc}") from None

        self.field = ShaciraNerfactoField(
            self.scene_box.aabb,
            num_images=self.num_train_data,
            grid=grid(cfg.num_levels, cfg.base_res, cfg.max_res, cfg.log2_hashmap_size),
            hidden_dim=cfg.hidden_dim,
            hidden_dim_color=cfg.hidden_dim_color,
            hidden_dim_transient=cfg.hidden_dim_transient,
            spatial_distortion=scene_contraction,
            use_pred_normals=cfg.predict_normals,
            use_average_appearance_embedding=cfg.use_average_appearance_embedding,
            appearance_embedding_dim=cfg.appearance_embed_dim if cfg.use_appearance_embedding else 0,
            average_init_density=cfg.average_init_density,
        )
        # nerfstudio's camera optimizer with device-side metrics (capturable.py): the same parameters and checkpoint
        # keys, and a step a CUDA graph can record.
        camera_cfg = dataclasses.replace(cfg.camera_optimizer, _target=ResidentCameraOptimizer)
        self.camera_optimizer = camera_cfg.setup(num_cameras=self.num_train_data, device="cpu")

        self.proposal_networks = torch.nn.ModuleList()
        n_nets = 1 if cfg.use_same_proposal_network else cfg.num_proposal_iterations
        for i in range(n_nets):
            args = dict(cfg.proposal_net_args_list[min(i, len(cfg.proposal_net_args_list) - 1)])
            self.proposal_networks.append(
                ShaciraDensityField(
                    self.scene_box.aabb,
                    grid=grid(
                        args.get("num_levels", 8),
                        args.get("base_res", 16),
                        args.get("max_res", 1024),
                        cfg.proposal_log2_hashmap_size or args.get("log2_hashmap_size", 18),
                    ),  # fmt: skip
                    num_layers=args.get("num_layers", 2),
                    hidden_dim=args.get("hidden_dim", 64),
                    spatial_distortion=scene_contraction,
                    use_linear=args.get("use_linear", False),
                    average_init_density=cfg.average_init_density,
                )
            )
        self.density_fns = [
            self.proposal_networks[min(i, n_nets - 1)].density_fn for i in range(cfg.num_proposal_iterations)
        ]

        def update_schedule(step: int) -> float:
            return np.clip(np.interp(step, [0, cfg.proposal_warmup], [0, cfg.proposal_update_every]), 1,
                           cfg.proposal_update_every)  # fmt: skip

        # nerfstudio's samplers and renderer with their per-step host constants on the device (capturable.py).
        self.proposal_sampler = ResidentProposalSampler(
            num_nerf_samples_per_ray=cfg.num_nerf_samples_per_ray,
            num_proposal_samples_per_ray=cfg.num_proposal_samples_per_ray,
            num_proposal_network_iterations=cfg.num_proposal_iterations,
            single_jitter=cfg.use_single_jitter,
            update_sched=update_schedule,
            initial_sampler=ResidentUniformSampler(single_jitter=cfg.use_single_jitter)
            if cfg.proposal_initial_sampler == "uniform"
            else None,
        )
        self.collider = NearFarCollider(near_plane=cfg.near_plane, far_plane=cfg.far_plane)
        self.renderer_rgb = ResidentRGBRenderer(background_color=cfg.background_color)
        self.renderer_accumulation = AccumulationRenderer()
        self.renderer_depth = DepthRenderer(method="median")
        self.renderer_expected_depth = DepthRenderer(method="expected")
        self.renderer_normals = NormalsRenderer()
        self.normals_shader = NormalsShader()
        self.rgb_loss = MSELoss()
        self.step = 0

        from torchmetrics.functional import structural_similarity_index_measure

        self.psnr = BatchPSNR()
        self.ssim = structural_similarity_index_measure
        self.lpips = LazyLPIPS()
        self.last_size_estimate: Dict[str, float] = {}
        self.compression = SizePanel(cfg.rate_lambda)
        self.__dict__["_step_graphs"] = None  # not a submodule: it holds the model
        # What cuda_graph None means here, settled once: graphs where they are tested.
        untested = graphs_untested_because(
            torch.device(device).type, cfg.compile, [g.implementation for g in self.grids.values()],
            cfg.camera_optimizer.mode,
        )  # fmt: skip
        self._graphs_by_default = untested is None
        if untested and torch.device(device).type == "cuda" and cfg.cuda_graph is None:
            CONSOLE.print(f"[yellow]shacira: training steps run eagerly (no CUDA graphs): {untested}")

    def uses_cuda_graphs(self) -> bool:
        """Whether training steps replay CUDA graphs (``cuda_graph``; None: where they are tested)."""
        choice = self.config.cuda_graph
        return self._graphs_by_default if choice is None else bool(choice)

    # ------------------------------------------------------------------------------------------- CUDA graphs

    def graphed_train_losses(self, ray_bundle, batch) -> Optional[Tuple[Dict[str, Tensor], Dict[str, Tensor]]]:  # noqa: ANN001
        """This training step's (losses, metrics) through ``step_graph.StepGraphs``; None: run the step eagerly
        (``cuda_graph`` off, evaluation mode, or a layout the graphs do not cover; the last is said once)."""
        if not (self.training and self.uses_cuda_graphs()):
            return None
        from shacira_nerf.nerf.step_graph import StepGraphs

        graphs = self.__dict__["_step_graphs"]
        if graphs is None:
            CONSOLE.print(
                "shacira: training steps replay CUDA graphs (each branch of the step is captured once, a few seconds; "
                "--pipeline.model.cuda-graph False runs them eagerly)"
            )
            self.quantizer.scalars_on_device = True  # what the graph replays must be read from device memory
            graphs = self.__dict__["_step_graphs"] = StepGraphs(
                self, self._step_branch, self._force_branch, self._after_graphed_step
            )
        result = graphs.losses(ray_bundle, batch)
        if result is None:
            if not graphs.reason_said:
                CONSOLE.print(f"[yellow]shacira: training steps run without CUDA graphs from here: {graphs.eager_reason}")
                graphs.reason_said = True
            return None
        losses, metrics = result
        for key, value in self.last_size_estimate.items():  # the metrics that are host numbers
            metrics[f"estimate_{key}"] = value
        return losses, metrics

    def _step_branch(self) -> Tuple[bool, bool]:
        """(proposal networks trained this step, quantizer annealing): the Python branches of a training step."""
        s = self.proposal_sampler
        updated = s._steps_since_update > s.update_sched(s._step) or s._step < 10  # nerfstudio's rule
        return bool(updated), self.quantizer.annealing

    def _force_branch(self, branch: Tuple[bool, bool]):  # noqa: ANN202
        """Put the proposal sampler's counters into ``branch`` for a capture; returns the function that restores them."""
        s = self.proposal_sampler
        saved = (s._step, s._steps_since_update)
        if branch[0]:
            s._step = 0
        else:
            s._step, s._steps_since_update = max(s._step, 10), 0

        def restore() -> None:
            s._step, s._steps_since_update = saved

        return restore

    def _after_graphed_step(self, branch: Tuple[bool, bool]) -> None:
        """What the proposal sampler's Python does after a step that trained it (a replay does not run it)."""
        if branch[0]:
            self.proposal_sampler._steps_since_update = 0

    def get_outputs(self, ray_bundle):  # noqa: ANN001, ANN201 - nerfstudio's signature
        """nerfacto's outputs; with ``compile``, its per-step functions are compiled at the first training step."""
        if self.config.compile and self.training and not self.__dict__.get("_hot_paths_compiled"):
            compile_hot_paths(self, COMPILE_BACKEND)
            self.__dict__["_hot_paths_compiled"] = True
        return super().get_outputs(ray_bundle)

    # ----------------------------------------------------------------------------------------------- grids, size

    @property
    def grids(self) -> Dict[str, ShaciraGrid]:
        """Every SHACIRA grid of the model by name: "field", "proposal_0", ... (the names used in the file)."""
        out = {"field": self.field.grid}
        for i, net in enumerate(self.proposal_networks):
            out[f"proposal_{i}"] = net.grid
        return out

    def num_latents(self) -> int:
        return sum(g.latents.num_latents for g in self.grids.values())

    def rate_bits(self) -> Tensor:
        """Differentiable estimated bits of all grids' latents as quantized now."""
        return torch.stack([g.rate_bits() for g in self.grids.values()]).sum()

    def stored_network_tensors(self) -> Dict[str, Tensor]:
        """The float tensors a scene file stores besides the coded latents, by parameter name.

        Left out: the latents (entropy-coded), the entropy models (stored as their integer tables), the camera
        optimizer (it corrects training poses only) and the per-image appearance embeddings, of which only the mean
        is kept: it is all that rendering a novel view uses.
        """
        out: Dict[str, Tensor] = {}
        for name, p in self.named_parameters():
            if ".latents.values" in name or ".entropy_model." in name or name.startswith("camera_optimizer."):
                continue
            if p.numel() == 0:  # nerfstudio's device_indicator_param
                continue
            if name == "field.embedding_appearance.embedding.weight":
                out[name] = p.detach().mean(dim=0, keepdim=True)
                continue
            out[name] = p.detach()
        return out

    def round_networks(self) -> None:
        """Round the stored networks to ``network_precision`` in place (the file then holds them exactly)."""
        round_to_precision_(self.stored_network_tensors().values(), self.config.network_precision)

    def finish_training(self) -> None:
        """After the last step: networks to their stored precision, entropy models refit to the final integers."""
        self.round_networks()
        for g in self.grids.values():
            g.entropy_model.refit(torch.round(g.latents.values.detach()), self.config.entropy_refit_steps)
        self.estimate_size()

    @torch.no_grad()
    def estimate_size(self) -> Dict[str, float]:
        """Estimated compressed size: hard-rounded latents under the entropy model, the stored networks, and the
        training cameras the file keeps (``camera_MB``, exact: one record per training image).

        An estimate, not a file: like the coder, it renormalises each dimension's probabilities over the integers
        actually used ([min, max]); what it leaves out is the 16-bit quantization of the stored tables, the range
        coder's final bytes per stream, the tables, the sections' framing and the header (see ``shacira info`` for
        the file's real byte counts).
        """
        bits = sum(g.entropy_model.estimate_bits(torch.round(g.latents.values)) for g in self.grids.values())
        numels = [t.numel() for t in self.stored_network_tensors().values()]
        network_bytes = stored_network_bytes(numels, self.config.network_precision)
        camera_bytes = stored_camera_bytes(self.num_train_data)
        latents = self.num_latents()
        estimate = {
            "bits_per_latent": bits / max(latents, 1),
            "latent_MB": bits / 8 / BYTES_PER_MB,
            "network_MB": network_bytes / BYTES_PER_MB,
            "camera_MB": camera_bytes / BYTES_PER_MB,
            "size_MB": (bits / 8 + network_bytes + camera_bytes) / BYTES_PER_MB,
            "uncompressed_grid_MB": latents * 4 / BYTES_PER_MB,
        }
        estimate["ratio_to_float32_grid"] = estimate["uncompressed_grid_MB"] / max(estimate["latent_MB"], 1e-12)
        self.last_size_estimate = estimate
        return estimate

    # -------------------------------------------------------------------------------------------- training hooks

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        """nerfacto's groups for the networks, plus one group each for latents, decoders and entropy models."""
        groups: Dict[str, List[Parameter]] = {
            "shacira_latents": [],
            "shacira_decoders": [],
            "shacira_entropy": [],
            "fields": [],
            "proposal_networks": [],
        }
        grid_params = set()
        for g in self.grids.values():
            groups["shacira_latents"].append(g.latents.values)
            groups["shacira_decoders"].extend(g.decoder.parameters())
            groups["shacira_entropy"].extend(g.entropy_model.parameters())
            grid_params.update(id(p) for p in g.parameters())
        groups["fields"] = [p for p in self.field.parameters() if id(p) not in grid_params]
        groups["proposal_networks"] = [p for p in self.proposal_networks.parameters() if id(p) not in grid_params]
        self.camera_optimizer.get_param_groups(param_groups=groups)
        return groups

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        trainer = training_callback_attributes.trainer
        # The run's total length: a resumed run (--load-dir) starts at the checkpoint's step + 1 and runs
        # --max-num-iterations more, so the schedule and the last-step finish count from step 0 of the whole run.
        max_steps = trainer._start_step + trainer.config.max_num_iterations if trainer is not None else 1

        def anneal(step: int) -> None:
            self.quantizer.set_progress(step, max_steps)

        def update_size(step: int) -> None:
            self.estimate_size()
            self.on_size_estimate(step)

        def finish(step: int) -> None:
            if step == max_steps - 1:  # the last step: what is saved and evaluated is what the file stores
                self.finish_training()

        callbacks.append(TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], anneal, 1))
        callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], finish, 1))
        callbacks.append(
            TrainingCallback(
                [TrainingCallbackLocation.AFTER_TRAIN_ITERATION], update_size, self.config.size_update_every
            )
        )
        return callbacks

    def on_size_estimate(self, step: int) -> None:
        """Show the new estimate in the viewer panel (the logs read ``last_size_estimate``)."""
        self.compression.show_estimate(self.last_size_estimate, step)

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        metrics = super().get_metrics_dict(outputs, batch)
        if self.training:
            # The loss takes the differentiable rate from here; the logged metrics hold it detached (nerfstudio's
            # writer turns every metric into a float, which warns for a tensor that requires grad).
            self._step_rate_bits = self.rate_bits()
            metrics["rate_bits"] = self._step_rate_bits.detach()
            metrics["rate_bits_per_latent"] = metrics["rate_bits"] / self.num_latents()
            for key, value in self.last_size_estimate.items():
                metrics[f"estimate_{key}"] = value
        return metrics

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        loss = super().get_loss_dict(outputs, batch, metrics_dict)
        if self.training and self.config.rate_lambda > 0:
            bits = getattr(self, "_step_rate_bits", None)
            if bits is None:  # get_metrics_dict did not run first (nerfstudio's pipelines always call it first)
                bits = self.rate_bits()
            self._step_rate_bits = None
            loss["rate_loss"] = self.config.rate_lambda * bits / self.num_latents()
        return loss

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """nerfacto's PSNR/SSIM/LPIPS, with LPIPS left out (and the reason kept) when it cannot run offline."""
        lpips = self.lpips
        nan_lpips = _NaNWhenUnavailable(lpips)
        self.lpips = nan_lpips
        try:
            metrics, images = super().get_image_metrics_and_images(outputs, batch)
        finally:
            self.lpips = lpips
        if nan_lpips.missing:
            metrics.pop("lpips", None)
        return metrics, images


class _NaNWhenUnavailable:
    """Adapts LazyLPIPS to nerfacto's ``float(self.lpips(...))`` call; remembers whether it was unavailable."""

    def __init__(self, lpips: LazyLPIPS) -> None:
        self.lpips = lpips
        self.missing = False

    def __call__(self, preds: Tensor, target: Tensor) -> Tensor:
        value: Optional[Tensor] = self.lpips(preds, target)
        if value is None:
            self.missing = True
            return torch.tensor(float("nan"))
        return value
