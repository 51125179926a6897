"""The latent decoder's two evaluation orders (batched matmul on CPU, broadcast products on CUDA) agree."""

import torch

from shacira_nerf.core.decoder import LatentDecoder, affine_per_level


def test_broadcast_and_matmul_decoding_agree_in_value_and_gradient() -> None:
    torch.manual_seed(0)
    decoder = LatentDecoder(num_levels=5, latent_dim=2, feature_dim=3)
    with torch.no_grad():
        decoder.bias.normal_()
    latents = torch.randn(200, 5, 2, requires_grad=True)
    results = []
    for broadcast in (False, True):
        out = affine_per_level(latents, decoder.weight, decoder.bias, broadcast)
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, 3)).sum(), [latents, decoder.weight, decoder.bias])
        results.append((out, grads))
    (out_a, grads_a), (out_b, grads_b) = results
    assert out_a.shape == (200, 5, 3)
    torch.testing.assert_close(out_a, out_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b)
    # per_level (the lookup path) is the same map, flattened level-major per point
    flat = decoder.per_level(latents.detach())
    torch.testing.assert_close(flat, out_a.detach().reshape(200, 15))


def test_batched_decoding_equals_each_member_alone() -> None:
    """Leading batch dimensions (the stacked fits of image.train) decode each member with its own decoder."""
    torch.manual_seed(1)
    latents, weight, bias = torch.randn(3, 50, 4, 2), torch.randn(3, 4, 2, 1), torch.randn(3, 4, 1)
    for broadcast in (False, True):
        out = affine_per_level(latents, weight, bias, broadcast)
        assert out.shape == (3, 50, 4, 1)
        for b in range(3):
            torch.testing.assert_close(out[b], affine_per_level(latents[b], weight[b], bias[b], broadcast))


def test_a_decoder_stack_decodes_each_member_as_itself() -> None:
    """``LatentDecoder.stack`` (latent dims zero-padded) decodes member b's latents as decoder b alone, and hands
    each member back unchanged (how the image trainer builds and returns its members)."""
    torch.manual_seed(2)
    decoders = [LatentDecoder(4, 1, 2), LatentDecoder(4, 2, 2)]
    with torch.no_grad():
        for d in decoders:
            d.bias.normal_()
    stack = LatentDecoder.stack(decoders)
    assert stack.weight.shape == (2, 4, 2, 2) and stack.latent_dim == 2
    latents = torch.randn(2, 30, 4, 2)
    latents[0, ..., 1] = 0.0  # member 0's padded column, held at zero by StackedLatents
    out = stack.per_level(latents)
    assert out.shape == (2, 30, 8)
    for b, d in enumerate(decoders):
        torch.testing.assert_close(out[b], d.per_level(latents[b, ..., : d.latent_dim]))
        back = LatentDecoder(4, d.latent_dim, 2)
        stack.copy_member_to(b, back)
        assert torch.equal(back.weight, d.weight) and torch.equal(back.bias, d.bias)
