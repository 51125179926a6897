"""The shacira pipeline: nerfstudio's VanillaPipeline whose evaluation also reports the compressed size, and whose
training steps go through the model's CUDA graphs when ``--pipeline.model.cuda-graph`` is on (``step_graph.py``).

``ns-eval`` writes whatever ``get_average_eval_image_metrics`` returns into its JSON, so the size goes there: the
byte length of the scene file this checkpoint exports to (the coded file is built in memory, not estimated), the
training-time estimate beside it, and a note when LPIPS could not be computed offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig

from shacira_nerf.units import BYTES_PER_MB


@dataclass
class ShaciraPipelineConfig(VanillaPipelineConfig):
    """VanillaPipelineConfig whose evaluation adds the compressed size."""

    _target: Type = field(default_factory=lambda: ShaciraPipeline)


class ShaciraPipeline(VanillaPipeline):
    """VanillaPipeline plus the compressed size in the averaged evaluation metrics."""

    def get_train_loss_dict(self, step: int):
        """nerfstudio's training losses; with the model's CUDA graphs on, computed by replaying them (no model
        outputs are returned then: the trainer does not read them). Several GPUs: always nerfstudio's path."""
        graphed = getattr(self.model, "graphed_train_losses", None)
        if graphed is None or self.world_size > 1 or not self.model.uses_cuda_graphs():
            return super().get_train_loss_dict(step)
        ray_bundle, batch = self.datamanager.next_train(step)
        result = graphed(ray_bundle, batch)
        if result is not None:
            loss_dict, metrics_dict = result
            return {}, loss_dict, metrics_dict
        model_outputs = self._model(ray_bundle)
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        return model_outputs, self.model.get_loss_dict(model_outputs, batch, metrics_dict), metrics_dict

    def get_average_image_metrics(self, data_loader, image_prefix: str, step=None, output_path=None, get_std=False):
        metrics = super().get_average_image_metrics(data_loader, image_prefix, step, output_path, get_std)
        model = self.model
        reason = getattr(getattr(model, "lpips", None), "unavailable_reason", None)
        if "lpips" not in metrics and reason:
            metrics["lpips_note"] = reason
        if hasattr(model, "estimate_size"):
            from shacira_nerf.nerf.scene_file import encode_pipeline

            estimate = model.estimate_size()
            metrics["size_bytes"] = len(encode_pipeline(self))
            metrics["size_MB"] = metrics["size_bytes"] / BYTES_PER_MB
            metrics["size_note"] = "size_bytes is the byte length of the .shac file `shacira export` writes"
            metrics["estimate_size_MB"] = estimate["size_MB"]
            metrics["estimate_bits_per_latent"] = estimate["bits_per_latent"]
        return metrics
