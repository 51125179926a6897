"""``--pipeline.model.compile``: the compiled training forward pass computes what the eager one computes, and a
training run does not recompile it every step (the annealing schedule and the proposal sampler's counters move
every step; a guard on either would make the compiled path slower than the eager one).

On a CPU the graphs are captured with the "aot_eager" backend (dynamo and AOTAutograd, forward and backward, as in
a real run, without inductor's code generation, which takes minutes on two cores); on a GPU with inductor itself, so
the device run tests the kernels it generates.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import SCENE

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _pipeline():
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    import shacira_nerf.nerf  # noqa: F401  (registers the methods)

    cfg = copy.deepcopy(all_methods["shacira-tiny"])
    cfg.pipeline.datamanager.dataparser = BlenderDataParserConfig(data=SCENE)
    cfg.pipeline.datamanager.train_num_rays_per_batch = 64
    torch.manual_seed(0)
    pipeline = cfg.pipeline.setup(device=DEVICE, test_mode="val")
    pipeline.train()
    return pipeline


def _loss_and_grads(pipeline, ray_bundle, batch, seed: int):
    model = pipeline.model
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    outputs = model(ray_bundle)
    metrics = model.get_metrics_dict(outputs, batch)
    loss = sum(model.get_loss_dict(outputs, batch, metrics).values())
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return outputs["rgb"].detach().clone(), loss.detach(), grads


@pytest.fixture
def compile_backend(monkeypatch):
    import torch._dynamo
    import torch._inductor.config

    from shacira_nerf.nerf import model as model_module

    torch._dynamo.reset()
    monkeypatch.setattr(model_module, "COMPILE_BACKEND", "inductor" if DEVICE == "cuda" else "aot_eager")
    # The samplers' jitter: inductor draws its own random numbers unless told to use torch's generator.
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    yield
    torch._dynamo.reset()


def test_compiled_training_step_matches_eager_and_does_not_recompile(compile_backend) -> None:
    from torch._dynamo.utils import counters

    pipeline = _pipeline()
    model = pipeline.model
    ray_bundle, batch = pipeline.datamanager.next_train(0)
    model.quantizer.set_progress(3, 100)
    rgb_eager, loss_eager, grads_eager = _loss_and_grads(pipeline, ray_bundle, batch, seed=1)

    model.config.compile = True
    rgb, loss, grads = _loss_and_grads(pipeline, ray_bundle, batch, seed=1)
    assert model.__dict__.get("_hot_paths_compiled"), "the compiled path did not run"
    # The same operations up to their order (fused, or gradients summed in another order): float rounding only.
    rtol = 1e-3 if DEVICE == "cuda" else 1e-5
    torch.testing.assert_close(rgb, rgb_eager, rtol=rtol, atol=rtol * 1e-2)
    torch.testing.assert_close(loss, loss_eager, rtol=rtol, atol=0.0)
    assert grads.keys() == grads_eager.keys()
    for name, grad in grads.items():
        scale = float(grads_eager[name].abs().max())
        torch.testing.assert_close(
            grad, grads_eager[name], rtol=rtol, atol=rtol * scale, msg=lambda m, n=name: f"{n}: {m}"
        )

    # Later steps move the schedule and the sampler's counters (as the training callbacks do): same graphs.
    graphs = counters["stats"]["unique_graphs"]
    for step in range(4, 8):
        model.quantizer.set_progress(step, 100)
        model.proposal_sampler.set_anneal(min(1.0, step / 10))
        model.proposal_sampler.step_cb(step)
        ray_bundle, batch = pipeline.datamanager.next_train(step)
        _loss_and_grads(pipeline, ray_bundle, batch, seed=step)
    assert counters["stats"]["unique_graphs"] == graphs, "the compiled forward was recompiled during training"

    # Evaluation runs the uncompiled code (other shapes, no gradients: compiling it would cost minutes for nothing).
    model.eval()
    with torch.no_grad():
        model(ray_bundle)
    assert counters["stats"]["unique_graphs"] == graphs
