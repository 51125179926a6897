"""CUDA-graph training steps (``--pipeline.model.cuda-graph``) and the device-resident pieces they rest on.

On any machine: the device-resident samplers, renderer, PSNR and annealing buffers compute what nerfstudio's classes
and the Python schedule compute, on the same random draws, and the function of tensors a graph records
(``TrainingLosses``) gives the pipeline's own losses. On a GPU (the device run): a replayed step gives the eager
step's losses and gradients in both branches of nerfacto's proposal schedule, replays draw new noise, and the
schedule's phases get their own graphs.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from conftest import SCENE
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.model_components.ray_samplers import (
    ProposalNetworkSampler,
    UniformLinDispPiecewiseSampler,
    UniformSampler,
)
from nerfstudio.model_components.renderers import RGBRenderer

from shacira_nerf.core.quantizer import AnnealedQuantizer
from shacira_nerf.nerf.capturable import (
    BatchPSNR,
    ResidentCameraOptimizer,
    ResidentLinDispSampler,
    ResidentProposalSampler,
    ResidentRGBRenderer,
    ResidentUniformSampler,
)
from shacira_nerf.nerf.step_graph import (
    InputLayout,
    TrainingLosses,
    _ThreadLocalCapture,
    clear_step_caches,
    make_graphed_thread_local,
    parameters_replaced,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")


def _bundle(n: int = 7) -> RayBundle:
    g = torch.Generator().manual_seed(3)
    directions = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return RayBundle(
        origins=torch.randn(n, 3, generator=g), directions=directions, pixel_area=torch.ones(n, 1),
        nears=torch.full((n, 1), 2.0), fars=torch.full((n, 1), 6.0),
    )  # fmt: skip


def _same_samples(a, b) -> None:  # noqa: ANN001 - RaySamples
    for name in ("starts", "ends", "origins", "directions"):
        torch.testing.assert_close(getattr(a.frustums, name), getattr(b.frustums, name), rtol=0, atol=0)
    torch.testing.assert_close(a.spacing_starts, b.spacing_starts, rtol=0, atol=0)
    torch.testing.assert_close(a.spacing_ends, b.spacing_ends, rtol=0, atol=0)


@pytest.mark.parametrize(
    "ours, theirs", [(ResidentUniformSampler, UniformSampler), (ResidentLinDispSampler, UniformLinDispPiecewiseSampler)]
)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("single_jitter", [True, False])
def test_resident_samplers_draw_nerfstudios_samples(ours, theirs, training: bool, single_jitter: bool) -> None:
    a_sampler, b_sampler = ours(single_jitter=single_jitter).train(training), theirs(single_jitter=single_jitter)
    b_sampler.train(training)
    torch.manual_seed(5)
    a = a_sampler(_bundle(), num_samples=9)
    torch.manual_seed(5)
    b = b_sampler(_bundle(), num_samples=9)
    _same_samples(a, b)


def _density(positions: torch.Tensor) -> torch.Tensor:
    return 3.0 * (positions.norm(dim=-1, keepdim=True) - 3.0).abs()


def test_the_proposal_samplers_annealing_exponent_is_a_buffer_filled_in_place() -> None:
    args = dict(num_proposal_samples_per_ray=(8, 6), num_nerf_samples_per_ray=5, single_jitter=True)
    ours = ResidentProposalSampler(**args, initial_sampler=ResidentUniformSampler(single_jitter=True))
    theirs = ProposalNetworkSampler(**args, initial_sampler=UniformSampler(single_jitter=True))
    exponent = ours._anneal
    ours.set_anneal(0.25)
    theirs.set_anneal(0.25)
    # The same tensor, refilled: what a CUDA graph reads is what the callback set.
    assert ours._anneal is exponent and float(exponent) == 0.25
    assert "anneal_exponent" not in ours.state_dict()  # checkpoints are unchanged
    torch.manual_seed(1)
    samples, weights, _ = ours(_bundle(), density_fns=[_density, _density])
    torch.manual_seed(1)
    samples_ref, weights_ref, _ = theirs(_bundle(), density_fns=[_density, _density])
    _same_samples(samples, samples_ref)
    for w, w_ref in zip(weights, weights_ref):
        torch.testing.assert_close(w, w_ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("background", ["white", "black", "last_sample", "random"])
def test_the_resident_renderer_renders_and_blends_as_nerfstudios(background: str) -> None:
    g = torch.Generator().manual_seed(2)
    rgb, weights = torch.rand(5, 4, 3, generator=g), torch.rand(5, 4, 1, generator=g) * 0.3
    pred, accumulation, gt = torch.rand(5, 3, generator=g), torch.rand(5, 1, generator=g), torch.rand(5, 4, generator=g)
    ours, theirs = ResidentRGBRenderer(background_color=background), RGBRenderer(background_color=background)
    for training in (True, False):
        ours.train(training), theirs.train(training)
        torch.manual_seed(3)
        a = [ours(rgb, weights), *ours.blend_background_for_loss_computation(pred, accumulation, gt)]
        torch.manual_seed(3)
        b = [theirs(rgb, weights), *theirs.blend_background_for_loss_computation(pred, accumulation, gt)]
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_batch_psnr_is_torchmetrics_psnr() -> None:
    from torchmetrics.image import PeakSignalNoiseRatio

    g = torch.Generator().manual_seed(4)
    preds, target = torch.rand(64, 3, generator=g), torch.rand(64, 3, generator=g)
    torch.testing.assert_close(BatchPSNR()(preds, target), PeakSignalNoiseRatio(data_range=1.0)(preds, target))
    images = torch.rand(2, 1, 3, 8, 8, generator=g)  # the evaluation's [1, 3, H, W] images
    torch.testing.assert_close(BatchPSNR()(images[0], images[1]), PeakSignalNoiseRatio(data_range=1.0)(*images))


@pytest.mark.parametrize("mode", ["SO3xR3", "SE3", "off"])
def test_the_resident_camera_optimizer_reports_nerfstudios_metrics_and_corrections(mode: str) -> None:
    from nerfstudio.cameras.camera_optimizers import CameraOptimizer, CameraOptimizerConfig

    ours = ResidentCameraOptimizer(CameraOptimizerConfig(mode=mode), num_cameras=5, device="cpu")
    theirs = CameraOptimizer(CameraOptimizerConfig(mode=mode), num_cameras=5, device="cpu")
    if mode != "off":
        adjustment = torch.randn(5, 6, generator=torch.Generator().manual_seed(4)) * 0.05
        with torch.no_grad():
            ours.pose_adjustment.copy_(adjustment)
            theirs.pose_adjustment.copy_(adjustment)
    assert ours.state_dict().keys() == theirs.state_dict().keys()  # checkpoints load either way
    got, expected = {}, {}
    ours.get_metrics_dict(got)
    theirs.get_metrics_dict(expected)
    assert got.keys() == expected.keys() and (mode == "off") == (not got)
    for key, value in got.items():
        assert isinstance(value, torch.Tensor) and value.shape == ()  # a device tensor a graph can hold
        torch.testing.assert_close(value, torch.as_tensor(expected[key], dtype=value.dtype), msg=key)
    indices = torch.tensor([0, 3, 3])
    torch.testing.assert_close(ours(indices), theirs(indices), rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["soft_round", "sga"])
def test_the_device_schedule_gives_the_python_schedules_values(mode: str) -> None:
    q = AnnealedQuantizer(mode=mode, anneal_fraction=0.7).train()
    g = torch.Generator().manual_seed(6)
    x, uniform = torch.randn(200, 2, generator=g) * 3, torch.rand(200, 2, generator=g)
    noise = uniform if mode == "sga" else None
    for step in (0, 31, 69):
        q.set_progress(step, 100)
        q.scalars_on_device = False
        expected = q(x, noise=noise)
        q.scalars_on_device = True
        torch.testing.assert_close(q(x, noise=noise), expected, rtol=1e-5, atol=1e-5)
        assert float(q.annealed_value) == pytest.approx(q.temperature if mode == "sga" else q.alpha, rel=1e-6)
    restored = AnnealedQuantizer(mode=mode, anneal_fraction=0.7)
    restored.load_state_dict(q.state_dict())  # a resumed run: the buffer follows the loaded progress
    assert float(restored.annealed_value) == pytest.approx(float(q.annealed_value), rel=1e-6)


def _pipeline(device: str = "cpu", rays: int = 64, camera_optimizer: str = "off"):
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    import shacira_nerf.nerf  # noqa: F401  (registers the methods)

    cfg = copy.deepcopy(all_methods["shacira-tiny"])
    cfg.pipeline.datamanager.dataparser = BlenderDataParserConfig(data=SCENE)
    cfg.pipeline.datamanager.train_num_rays_per_batch = rays
    cfg.pipeline.model.camera_optimizer.mode = camera_optimizer  # the Blender flags' "off"; a capture's "SO3xR3"
    torch.manual_seed(0)
    pipeline = cfg.pipeline.setup(device=device, test_mode="val")
    pipeline.train()
    return pipeline


def _eager_losses(model, ray_bundle, batch, seed: int):  # noqa: ANN001
    clear_step_caches(model)
    torch.manual_seed(seed)
    outputs = model(copy.deepcopy(ray_bundle))
    metrics = model.get_metrics_dict(outputs, batch)
    return model.get_loss_dict(outputs, batch, metrics), metrics


def test_the_recorded_function_gives_the_pipelines_losses_and_metrics() -> None:
    pipeline = _pipeline()
    model = pipeline.model
    ray_bundle, batch = pipeline.datamanager.next_train(0)
    model.quantizer.set_progress(3, 100)  # SGA annealing: noise drawn, from the same seed in both
    losses, metrics = _eager_losses(model, ray_bundle, batch, seed=1)

    layout, tensors = InputLayout.of(ray_bundle, batch)
    wrapper = TrainingLosses(model, layout)
    clear_step_caches(model)
    torch.manual_seed(1)
    got_losses, got_metrics = wrapper.split(wrapper(*tensors))
    assert list(got_losses) == list(losses) and "rate_loss" in got_losses
    for key, value in losses.items():
        torch.testing.assert_close(got_losses[key], value, rtol=0, atol=0, msg=key)
    tensor_metrics = {k: v for k, v in metrics.items() if isinstance(v, torch.Tensor)}
    assert list(got_metrics) == list(tensor_metrics) and "psnr" in got_metrics
    for key, value in tensor_metrics.items():
        torch.testing.assert_close(got_metrics[key], value.detach(), rtol=0, atol=0, msg=key)


def test_the_recorded_function_on_parameter_aliases_gives_the_parameters_gradients() -> None:
    # What a capture records: the step on aliases of the parameters. Their gradients must be the parameters' own,
    # and the parameters themselves must be left alone (a capture must not touch their gradient accumulators).
    pipeline = _pipeline()
    model = pipeline.model
    ray_bundle, batch = pipeline.datamanager.next_train(0)
    model.quantizer.set_progress(80, 100)  # straight-through rounding: no noise
    model.zero_grad(set_to_none=True)
    losses, _ = _eager_losses(model, ray_bundle, batch, seed=1)
    sum(losses.values()).backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)

    layout, tensors = InputLayout.of(ray_bundle, batch)
    wrapper = TrainingLosses(model, layout)
    recorded, aliases, params = wrapper.on_parameter_aliases()
    assert [id(p) for p in params] == [id(p) for p in wrapper.parameters()]
    assert all(a.data_ptr() == p.data_ptr() and a is not p for a, p in zip(aliases, params))
    before = dict(model.named_parameters())
    clear_step_caches(model)
    torch.manual_seed(1)
    values = recorded(*tensors, *aliases)
    got, _ = wrapper.split(values)
    # Every slot holds its parameter again, the proposal grids' too (each is registered under two names): what the
    # optimizer updates and the next capture aliases.
    after = dict(model.named_parameters())
    assert after.keys() == before.keys() and all(after[n] is p for n, p in before.items())
    assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())
    for key, value in losses.items():
        torch.testing.assert_close(got[key], value.detach(), rtol=0, atol=0, msg=key)
    trainable = [(n, a) for (n, _), a in zip(wrapper.named_parameters(), aliases) if a.requires_grad]
    grads = torch.autograd.grad(sum(got.values()), [a for _, a in trainable], allow_unused=True)
    assert all(p.grad is None for p in model.parameters())
    used = {n.removeprefix("model."): g for (n, _), g in zip(trainable, grads) if g is not None}
    assert used.keys() == expected.keys()
    for name, grad in used.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-5, atol=1e-7, msg=name)


def test_parameters_replaced_swaps_shared_modules_and_tied_parameters_once_and_puts_them_back() -> None:
    shared, tied = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    other = torch.nn.Linear(2, 2)
    other.weight = tied.weight  # one parameter in two modules
    model = torch.nn.ModuleDict({"a": shared, "b": torch.nn.Sequential(shared, tied), "c": other})
    params = list(model.parameters())
    assert len(params) == 5  # shared's two, tied's two, other's bias
    replacement = {id(p): p.detach().clone().requires_grad_() for p in params}
    new_shared, new_tied = replacement[id(shared.weight)], replacement[id(tied.weight)]
    with parameters_replaced(model, replacement):
        assert model["b"][0].weight is new_shared and model["a"].weight is new_shared
        assert model["c"].weight is new_tied and model["b"][1].weight is new_tied
        out = model["c"](model["b"](torch.ones(1, 2))).sum()
    grads = torch.autograd.grad(out, [replacement[id(p)] for p in params])
    assert all(g is not None for g in grads)
    assert list(model.parameters()) == params and all(isinstance(p, torch.nn.Parameter) for p in params)
    assert model["c"].weight is tied.weight is model["b"][1].weight and model["a"].weight is shared.weight
    with pytest.raises(RuntimeError, match="inside"):  # an error in the block still puts every parameter back
        with parameters_replaced(model, replacement):
            raise RuntimeError("inside")
    assert list(model.parameters()) == params


def test_graphs_are_the_default_only_where_they_are_tested() -> None:
    from shacira_nerf.nerf.model import graphs_untested_because

    assert graphs_untested_because("cuda", False, ["triton", "triton"], "off") is None
    assert "CUDA" in graphs_untested_because("cpu", False, ["torch"], "off")
    assert "compile" in graphs_untested_because("cuda", True, ["triton"], "off")
    assert "Triton" in graphs_untested_because("cuda", False, ["triton", "tcnn"], "off")
    # nerfacto's default on a capture: eager, with the flags that choose otherwise
    reason = graphs_untested_because("cuda", False, ["triton"], "SO3xR3")
    assert "SO3xR3" in reason and "--pipeline.model.cuda-graph True" in reason


def test_cuda_graph_needs_a_cuda_device_and_no_compile() -> None:
    from nerfstudio.configs.method_configs import all_methods

    from shacira_nerf.nerf.model import ShaciraConfigError, ShaciraModelConfig

    with pytest.raises(ShaciraConfigError, match=r"^pipeline.model.cuda_graph cannot be combined with compile"):
        ShaciraModelConfig(cuda_graph=True, compile=True)
    if torch.cuda.is_available():
        return
    cfg = copy.deepcopy(all_methods["shacira-tiny"])
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    cfg.pipeline.datamanager.dataparser = BlenderDataParserConfig(data=SCENE)
    pipeline = cfg.pipeline.setup(device="cpu", test_mode="val")  # the default: graphs only where tested
    assert pipeline.model.config.cuda_graph is None and not pipeline.model.uses_cuda_graphs()
    pipeline.train()
    _, losses, _ = pipeline.get_train_loss_dict(0)  # the eager step
    assert "rate_loss" in losses and pipeline.model.__dict__["_step_graphs"] is None
    cfg.pipeline.model.cuda_graph = True
    with pytest.raises(ShaciraConfigError, match=r"^pipeline.model.cuda_graph needs a CUDA device.*'cpu'$"):
        cfg.pipeline.setup(device="cpu", test_mode="val")


def test_captures_run_in_thread_local_mode_on_torch_with_and_without_the_argument(monkeypatch) -> None:  # noqa: ANN001
    # What make_graphed_thread_local hands torch, on a torch whose make_graphed_callables takes capture_error_mode
    # and on one that does not (the H200's 2.11): there, every torch.cuda.graph it opens is a thread-local one,
    # and torch.cuda.graph is torch's own again afterwards. (The captures themselves: the GPU tests below.)
    def function(*tensors: torch.Tensor) -> tuple:
        return tensors

    seen: dict = {}

    def with_the_argument(callables, sample_args, allow_unused_input=False, capture_error_mode="global"):  # noqa: ANN001, ANN202
        seen.update(mode=capture_error_mode, unused=allow_unused_input)
        return callables

    def without_the_argument(callables, sample_args, num_warmup_iters=3, allow_unused_input=False, pool=None):  # noqa: ANN001, ANN202
        seen.update(graph=torch.cuda.graph, unused=allow_unused_input)
        return callables

    original = torch.cuda.graph
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", with_the_argument)
    assert make_graphed_thread_local(function, ()) is function
    assert seen == {"mode": "thread_local", "unused": True}
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", without_the_argument)
    assert make_graphed_thread_local(function, ()) is function
    assert seen["graph"] is _ThreadLocalCapture and seen["unused"] and torch.cuda.graph is original
    assert _ThreadLocalCapture(None, stream=object()).capture_error_mode == "thread_local"  # type: ignore[arg-type]
    assert _ThreadLocalCapture(None, stream=object(), capture_error_mode="relaxed").capture_error_mode == "relaxed"  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ on a GPU


def _put_in_branch(model, updated: bool) -> None:  # noqa: ANN001
    sampler = model.proposal_sampler
    # nerfstudio's rule: trained when steps_since_update > update_sched(step) (1 early on) or step < 10.
    sampler._step, sampler._steps_since_update = (0, 7) if updated else (100, 1)


def _grads(model) -> dict:  # noqa: ANN001
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@needs_cuda
@pytest.mark.parametrize(
    "updated, camera_optimizer",
    [(True, "off"), (False, "off"), (True, "SO3xR3")],
    ids=["proposals-trained", "proposals-frozen", "camera-optimizer"],  # SO3xR3: nerfacto's default on a capture
)
def test_a_replayed_step_gives_the_eager_steps_losses_and_gradients(updated: bool, camera_optimizer: str) -> None:
    pipeline = _pipeline("cuda", camera_optimizer=camera_optimizer)
    model = pipeline.model
    if camera_optimizer != "off":  # pose adjustments away from zero, so that their gradients and metrics say something
        with torch.no_grad():
            adjustment = model.camera_optimizer.pose_adjustment
            adjustment.copy_(torch.randn(adjustment.shape, generator=torch.Generator().manual_seed(5)) * 0.02)
    for module in model.modules():  # no jitter: a replay and an eager step compute the same numbers
        if hasattr(module, "train_stratified"):
            module.train_stratified = False
    model.quantizer.set_progress(80, 100)  # straight-through rounding: no noise either
    ray_bundle, batch = pipeline.datamanager.next_train(0)

    _put_in_branch(model, updated)
    model.zero_grad(set_to_none=True)
    losses, metrics = _eager_losses(model, ray_bundle, batch, seed=1)
    sum(losses.values()).backward()
    expected = _grads(model)
    assert (model.proposal_sampler._steps_since_update == 0) == updated

    model.config.cuda_graph = True
    for replay in range(2):  # the capture, then a replay of it
        _put_in_branch(model, updated)
        model.zero_grad(set_to_none=True)
        got_losses, got_metrics = model.graphed_train_losses(ray_bundle, batch)
        sum(got_losses.values()).backward()
        assert model.__dict__["_step_graphs"].captures == 1
        assert (model.proposal_sampler._steps_since_update == 0) == updated
        for key, value in losses.items():
            torch.testing.assert_close(got_losses[key], value.detach(), rtol=1e-4, atol=1e-6, msg=f"{key} {replay}")
        torch.testing.assert_close(got_metrics["psnr"], metrics["psnr"].detach(), rtol=1e-4, atol=1e-4)
        camera_metrics = [k for k in metrics if k.startswith("camera_opt_")]
        assert len(camera_metrics) == (4 if camera_optimizer != "off" else 0)
        assert camera_optimizer == "off" or "camera_opt_regularizer" in got_losses
        for key in camera_metrics:
            torch.testing.assert_close(got_metrics[key], metrics[key], rtol=1e-6, atol=1e-7, msg=key)
        assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())  # the captures put them back
        grads = _grads(model)
        assert grads.keys() == expected.keys()
        for name, grad in grads.items():
            scale = float(expected[name].abs().max())
            torch.testing.assert_close(
                grad, expected[name], rtol=1e-3, atol=1e-3 * scale + 1e-9, msg=lambda m, n=name: f"{n}: {m}"
            )


def _graphed_model_and_batch():  # noqa: ANN202
    """shacira-tiny's model on the GPU with CUDA graphs asked for, and a training batch."""
    pipeline = _pipeline("cuda")
    pipeline.model.config.cuda_graph = True
    ray_bundle, batch = pipeline.datamanager.next_train(0)
    return pipeline.model, ray_bundle, batch


@needs_cuda
def test_a_capture_survives_another_threads_cuda_calls() -> None:
    # nerfstudio's trainer runs threads beside the training loop (data loaders pinning and copying batches); in
    # CUDA's "global" capture mode one of their calls during a capture invalidates it and the step fails. Here a
    # thread allocates fresh page-locked buffers and copies them to the GPU on its own stream, as a prefetching
    # loader does, from before the first capture until after it.
    model, ray_bundle, batch = _graphed_model_and_batch()
    stop, calls, errors = threading.Event(), [0], []

    def loader() -> None:
        stream = torch.cuda.Stream()
        try:
            while not stop.is_set():
                with torch.cuda.stream(stream):
                    host = torch.full((1024 * (1 + calls[0] % 64),), 1.0).pin_memory()
                    host.to("cuda", non_blocking=True).sum()
                calls[0] += 1
        except Exception as exc:  # noqa: BLE001 - the loader's own failure is reported below
            errors.append(exc)

    thread = threading.Thread(target=loader, daemon=True)
    thread.start()
    try:
        losses, _ = model.graphed_train_losses(ray_bundle, batch)
        sum(losses.values()).backward()
    finally:
        stop.set()
        thread.join()
    torch.cuda.synchronize()
    assert not errors, errors
    assert calls[0] > 10  # the thread ran, from before the capture to after it
    assert model.__dict__["_step_graphs"].captures == 1
    assert all(torch.isfinite(v).all() for v in losses.values())


@needs_cuda
def test_replays_draw_new_noise_and_each_phase_gets_its_graph() -> None:
    model, ray_bundle, batch = _graphed_model_and_batch()
    previous = []  # as nerfstudio's trainer does, each step's loss lives on while the next step runs

    def step(updated: bool) -> float:
        _put_in_branch(model, updated)
        model.zero_grad(set_to_none=True)
        losses = model.graphed_train_losses(ray_bundle, batch)[0]
        loss = sum(losses.values())
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        previous[:] = [loss]
        return float(losses["rgb_loss"])

    # An eager step first, its loss kept: the captures below must not touch its gradient accumulators.
    losses, _ = _eager_losses(model, ray_bundle, batch, seed=1)
    previous.append(sum(losses.values()))
    previous[0].backward()
    model.quantizer.set_progress(10, 100)  # SGA annealing
    first, second = step(True), step(True)
    assert first != second, "a replay reused the captured random numbers"
    graphs = model.__dict__["_step_graphs"]
    assert graphs.captures == 1
    step(False)
    assert graphs.captures == 2 and len(graphs.graphs) == 2
    model.quantizer.set_progress(90, 100)  # annealing is over: its graphs go
    step(True)
    assert graphs.captures == 3 and len(graphs.graphs) == 1
    step(False)
    assert graphs.captures == 4 and len(graphs.graphs) == 2 and graphs.eager_reason is None
    # Evaluation still runs eagerly, on the latents as trained.
    model.eval()
    with torch.no_grad():
        outputs = model(copy.deepcopy(ray_bundle))
    assert torch.isfinite(outputs["rgb"]).all()


@needs_cuda
def test_nerfstudios_trainer_trains_through_every_branch_on_graphs(tmp_path) -> None:  # noqa: ANN001
    # What ``ns-train shacira-tiny`` runs on a GPU: nerfstudio's Trainer, its optimizers,
    # gradient scaler and callbacks, over both proposal branches in and after annealing.
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    import shacira_nerf.nerf  # noqa: F401  (registers the methods)

    cfg = copy.deepcopy(all_methods["shacira-tiny"])
    cfg.pipeline.datamanager.dataparser = BlenderDataParserConfig(data=SCENE)
    assert cfg.pipeline.model.cuda_graph is None  # the default: on a CUDA device with the Triton lookup, graphs
    cfg.machine.device_type = "cuda"
    cfg.max_num_iterations, cfg.vis, cfg.output_dir = 60, "tensorboard", tmp_path
    # nerfstudio's evaluations interleave with the graphed steps, eagerly, as in a default ns-train
    cfg.steps_per_eval_batch, cfg.steps_per_eval_image, cfg.steps_per_eval_all_images = 20, 30, 10**9
    cfg.viewer.quit_on_train_completion = True
    cfg.set_timestamp()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    model = trainer.pipeline.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    graphs = model.__dict__["_step_graphs"]
    assert graphs is not None and graphs.eager_reason is None
    assert graphs.captures == 4  # proposals trained / frozen, while annealing and after it
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # What the optimizers hold is still what the model holds (captures must not leave aliases behind)
    held = {id(p) for o in trainer.optimizers.optimizers.values() for g in o.param_groups for p in g["params"]}
    assert all(id(p) in held for n, p in model.named_parameters() if "latents" in n or "proposal" in n)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert any("latent" in n for n in moved) and any("proposal" in n for n in moved), moved
    assert list((tmp_path).rglob("step-*.ckpt"))
