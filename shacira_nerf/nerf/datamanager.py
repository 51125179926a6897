"""nerfstudio's ParallelDataManager with evaluation loaders sized to the machine.

nerfstudio 1.1.5 gives each of its three evaluation data loaders ``4 * world_size`` worker processes whatever the
machine (``parallel_datamanager.py:259-291``); on a 2-core CPU torch then warns that 4 is more than the 2 it
suggests, and the extra processes only compete for the cores training uses. Here the count is at most the CPUs this
process may run on (torch's own suggestion), decided on the machine that runs, not stored in the config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Type

from nerfstudio.data.datamanagers.parallel_datamanager import ParallelDataManager, ParallelDataManagerConfig
from nerfstudio.data.utils.dataloaders import CacheDataloader, FixedIndicesEvalDataloader, RandIndicesEvalDataloader
from nerfstudio.model_components.ray_generators import RayGenerator
from nerfstudio.utils.rich_utils import CONSOLE


def usable_cpus() -> int:
    """CPUs this process may run on (what torch's DataLoader compares its worker count with)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class ShaciraDataManagerConfig(ParallelDataManagerConfig):
    """ParallelDataManagerConfig whose evaluation loaders use no more workers than the machine has CPUs."""

    _target: Type = field(default_factory=lambda: ShaciraDataManager)
    eval_num_workers: Optional[int] = None
    """Worker processes per evaluation data loader; None: nerfstudio's 4 per device, at most the usable CPUs."""


class ShaciraDataManager(ParallelDataManager):
    """ParallelDataManager; only ``setup_eval`` differs (the loaders' worker count)."""

    config: ShaciraDataManagerConfig

    def eval_workers(self) -> int:
        if self.config.eval_num_workers is not None:
            return self.config.eval_num_workers
        return min(4 * self.world_size, usable_cpus())

    def setup_eval(self):
        """nerfstudio's ``ParallelDataManager.setup_eval`` (1.1.5) with ``eval_workers()`` workers per loader."""
        assert self.eval_dataset is not None
        CONSOLE.print("Setting up evaluation dataset...")
        workers = self.eval_workers()
        self.eval_image_dataloader = CacheDataloader(
            self.eval_dataset,
            num_images_to_sample_from=self.config.eval_num_images_to_sample_from,
            num_times_to_repeat_images=self.config.eval_num_times_to_repeat_images,
            device=self.device,
            num_workers=workers,
            pin_memory=True,
            collate_fn=self.config.collate_fn,
            exclude_batch_keys_from_device=self.exclude_batch_keys_from_device,
        )
        self.iter_eval_image_dataloader = iter(self.eval_image_dataloader)
        self.eval_pixel_sampler = self._get_pixel_sampler(self.eval_dataset, self.config.eval_num_rays_per_batch)  # type: ignore
        self.eval_ray_generator = RayGenerator(self.eval_dataset.cameras.to(self.device))
        self.fixed_indices_eval_dataloader = FixedIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device, num_workers=workers
        )
        self.eval_dataloader = RandIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device, num_workers=workers
        )
