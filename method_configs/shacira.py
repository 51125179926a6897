"""The ``shacira`` and ``shacira-tiny`` methods, registered through nerfstudio's ``nerfstudio.method_configs``.

- ``shacira``: nerfacto's defaults (rays, samples, proposal schedule, 30k iterations) with SHACIRA grids, for GPUs.
- ``shacira-tiny``: a small preset that trains the bundled scene on a 2-core CPU in minutes with no extra flags.

Learning rates follow the SHACIRA appendix for 3D (latents 0.05, decoders 0.1, networks 5e-4) except the entropy
models: the appendix's 1e-4 leaves the CDFs far from the latents' distribution for thousands of steps (fitting the
entropy model of a trained shacira-tiny grid with Adam: 4.06 bits/latent after 1500 steps at 1e-4, 2.19 at 1e-3,
2.17 after 300 steps at 1e-2, against an empirical entropy of 2.16), and a mis-fitted model both inflates the coded
file and points the rate gradient the wrong way. ``shacira`` (30k steps) uses 1e-3, ``shacira-tiny`` 1e-2.

Both read a Blender-format folder or nerfstudio-data (``auto-data``), and both check ``--data`` when tyro builds the
config, before nerfstudio prints it or writes ``outputs/`` (``ShaciraTrainerConfig``). Their evaluation loaders use at
most as many worker processes as the machine has CPUs (``ShaciraDataManagerConfig``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from shacira_nerf.nerf.datamanager import ShaciraDataManagerConfig
from shacira_nerf.nerf.dataparser import AutoDataParserConfig, check_scene_folder, print_blender_benchmark_hint
from shacira_nerf.nerf.model import ShaciraModelConfig
from shacira_nerf.nerf.optimizers import FusedAdamOptimizerConfig
from shacira_nerf.nerf.pipeline import ShaciraPipelineConfig


def _adam(lr: float, max_steps: int) -> dict:
    """Adam with nerfacto's exponential decay to 1% of the initial rate."""
    return {
        "optimizer": FusedAdamOptimizerConfig(lr=lr, eps=1e-15),
        "scheduler": ExponentialDecaySchedulerConfig(lr_final=lr * 1e-2, max_steps=max_steps),
    }


def shacira_optimizers(max_steps: int = 200000, networks_lr: float = 5e-4, entropy_lr: float = 1e-3) -> dict:
    """One optimizer per parameter group (the model's ``get_param_groups`` names them)."""
    return {
        "shacira_latents": _adam(0.05, max_steps),
        "shacira_decoders": _adam(0.1, max_steps),
        "shacira_entropy": {"optimizer": FusedAdamOptimizerConfig(lr=entropy_lr, eps=1e-15), "scheduler": None},
        "fields": _adam(networks_lr, max_steps),
        "proposal_networks": _adam(networks_lr, max_steps),
        "camera_opt": {
            "optimizer": FusedAdamOptimizerConfig(lr=1e-3, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=5000),
        },
    }


@dataclass
class ShaciraTrainerConfig(TrainerConfig):
    """nerfstudio's TrainerConfig, plus a check of ``--data`` as soon as tyro has built the config.

    ``ns-train`` prints the whole config and writes ``outputs/.../config.yml`` before its datamanager first looks at
    the data folder; tyro calls ``__post_init__`` while it parses the command line, before either. The defaults
    (built at import) have no ``--data``, and a run reloaded from ``config.yml`` is not re-checked (yaml does not
    call ``__init__``).
    """

    def __post_init__(self) -> None:
        datamanager = self.pipeline.datamanager
        dataparser = getattr(datamanager, "dataparser", None)
        data = self.data if self.data is not None else getattr(datamanager, "data", None)
        if data is None and dataclasses.is_dataclass(dataparser):
            # `ns-train shacira auto-data --data X`: X is the dataparser's own; a value other than its default was
            # given on the command line.
            default = {f.name: f.default for f in dataclasses.fields(dataparser)}.get("data", dataclasses.MISSING)
            if getattr(dataparser, "data", default) != default:
                data = dataparser.data
        if data is None:
            return
        check_scene_folder(data, dataparser)
        print_blender_benchmark_hint(data, dataparser, self.pipeline.model)


shacira = MethodSpecification(
    config=ShaciraTrainerConfig(
        method_name="shacira",
        steps_per_eval_batch=500,
        steps_per_save=2000,
        max_num_iterations=30000,
        mixed_precision=True,
        pipeline=ShaciraPipelineConfig(
            datamanager=ShaciraDataManagerConfig(
                dataparser=AutoDataParserConfig(),
                train_num_rays_per_batch=4096,
                eval_num_rays_per_batch=4096,
            ),
            model=ShaciraModelConfig(
                eval_num_rays_per_chunk=1 << 15,
                average_init_density=0.01,
                camera_optimizer=CameraOptimizerConfig(mode="SO3xR3"),
            ),
        ),
        optimizers=shacira_optimizers(),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    ),
    description="nerfacto with SHACIRA-compressed hash grids (Girish et al., ICCV 2023); for GPUs.",
)

TINY_ITERATIONS = 1500

shacira_tiny = MethodSpecification(
    config=ShaciraTrainerConfig(
        method_name="shacira-tiny",
        steps_per_eval_batch=250,
        steps_per_eval_image=500,
        steps_per_eval_all_images=1000000,
        steps_per_save=500,
        max_num_iterations=TINY_ITERATIONS,
        mixed_precision=False,
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        pipeline=ShaciraPipelineConfig(
            datamanager=ShaciraDataManagerConfig(
                dataparser=AutoDataParserConfig(),
                train_num_rays_per_batch=512,
                eval_num_rays_per_batch=512,
                num_processes=1,
            ),
            model=ShaciraModelConfig(
                eval_num_rays_per_chunk=1 << 12,
                average_init_density=0.01,
                implementation="auto",  # torch on a CPU, Triton on a GPU
                num_levels=8,
                max_res=256,
                log2_hashmap_size=15,
                hidden_dim=32,
                hidden_dim_color=32,
                appearance_embed_dim=8,
                num_nerf_samples_per_ray=24,
                num_proposal_samples_per_ray=(64, 32),
                proposal_net_args_list=[
                    {"hidden_dim": 16, "log2_hashmap_size": 13, "num_levels": 4, "max_res": 64, "use_linear": False},
                    {"hidden_dim": 16, "log2_hashmap_size": 13, "num_levels": 4, "max_res": 128, "use_linear": False},
                ],
                proposal_warmup=500,
                camera_optimizer=CameraOptimizerConfig(mode="off"),
                size_update_every=50,
            ),
        ),
        optimizers=shacira_optimizers(max_steps=TINY_ITERATIONS * 5, entropy_lr=1e-2),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 12),
        vis="viewer",
    ),
    description="A small SHACIRA preset that trains the bundled scene on a 2-core CPU in minutes.",
)
