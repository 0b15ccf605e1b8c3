"""CNNEncoder: the Context it makes (memory, h0, c0), gradients into its learned layers, the frozen or partly
fine-tuned backbone, and the same Context from cached features."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from captioning.backbones import BACKBONES, build_backbone
from captioning.encoder import CNNEncoder


def _encoder(name="mobilenet_v3_small", hidden=16, layers=1, cell="gru", fine_tune=0) -> CNNEncoder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: the warning has its own test
        return CNNEncoder(name, hidden, layers, cell, weights=None, fine_tune=fine_tune)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_memory_is_the_flattened_grid_for_every_backbone(name):
    encoder = _encoder(name)
    ctx = encoder(torch.randn(2, 3, 64, 64))
    channels = BACKBONES[name].channels
    assert encoder.memory_dim == channels
    assert ctx.memory.shape == (2, 4, channels) and ctx.memory_mask is None  # 64 px: a 2 x 2 grid
    assert ctx.h0.shape == (1, 2, 16) and ctx.c0 is None


@pytest.mark.parametrize("cell, layers", [("gru", 1), ("gru", 3), ("lstm", 1), ("lstm", 2)])
def test_initial_states_per_layer_and_every_learned_parameter_gets_a_gradient(cell, layers):
    encoder = _encoder(hidden=8, layers=layers, cell=cell)
    ctx = encoder(torch.randn(3, 3, 64, 64))
    assert ctx.h0.shape == (layers, 3, 8) and ctx.h0.is_contiguous()
    assert (ctx.c0 is None) == (cell == "gru")
    loss = ctx.h0.pow(2).sum() + (ctx.c0.pow(2).sum() if ctx.c0 is not None else 0)
    loss.backward()
    learned = [p for n, p in encoder.named_parameters() if not n.startswith("backbone.")]
    assert len(learned) == (4 if cell == "lstm" else 2)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learned)
    if cell == "lstm":
        assert not torch.allclose(ctx.h0, ctx.c0)  # two layers, not one state copied


def test_layers_get_their_own_slice_of_the_initial_state():
    encoder = _encoder(hidden=4, layers=2)
    features = torch.randn(2, 576, 2, 2)
    ctx = encoder.context_from_features(features)
    full = torch.tanh(encoder.init_h(features.flatten(2).mean(2)))  # (B, layers * H)
    assert torch.allclose(ctx.h0[0], full[:, :4]) and torch.allclose(ctx.h0[1], full[:, 4:])


def test_frozen_backbone_stays_in_eval_mode_and_out_of_the_graph():
    encoder = _encoder().train()
    assert not any(p.requires_grad for p in encoder.backbone.parameters())
    assert not any(m.training for m in encoder.backbone.body.modules()) and encoder.init_h.training
    stats = [m.running_mean.clone() for m in encoder.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    ctx = encoder(torch.randn(2, 3, 64, 64))
    assert not ctx.memory.requires_grad and ctx.h0.requires_grad
    assert all(
        torch.equal(s, m.running_mean)
        for s, m in zip(stats, (m for m in encoder.backbone.modules() if isinstance(m, nn.BatchNorm2d)))
    )


@pytest.mark.parametrize("name, n", [("resnet18", 2), ("efficientnet_lite0", 3)])
def test_fine_tune_trains_exactly_the_last_blocks(name, n):
    encoder = _encoder(name, fine_tune=n).train()
    blocks = encoder.backbone.blocks()
    last = {id(p) for block in blocks[-n:] for p in block.parameters()}
    assert all(p.requires_grad == (id(p) in last) for p in encoder.backbone.parameters())
    ctx = encoder(torch.randn(2, 3, 64, 64))
    (ctx.memory.sum() + ctx.h0.sum()).backward()
    assert all((p.grad is not None) == (id(p) in last) for p in encoder.backbone.parameters())
    last_modules = {id(m) for block in blocks[-n:] for m in block.modules()}
    assert all(m.training == (id(m) in last_modules) for m in encoder.backbone.body.modules() if list(m.parameters()))


def test_cached_features_make_the_same_context():
    encoder = _encoder(cell="lstm", layers=2).eval()
    images = torch.randn(2, 3, 64, 64)
    direct = encoder(images)
    with torch.no_grad():
        features = encoder.backbone(images)  # (B, C, h, w)
    for cached in (features, features.flatten(2).transpose(1, 2)):  # a map, or regions (B, h*w, C)
        ctx = encoder.context_from_features(cached)
        assert torch.allclose(ctx.memory, direct.memory) and torch.allclose(ctx.h0, direct.h0)
        assert torch.allclose(ctx.c0, direct.c0)
    half = encoder.context_from_features(features.half())  # as the feature cache stores them
    assert half.memory.dtype == torch.float32 and torch.allclose(half.h0, direct.h0, atol=1e-2)
    with pytest.raises(ValueError, match="features must be"):
        encoder.context_from_features(torch.randn(2, 100, 2, 2))


def test_random_weights_warn_and_a_built_backbone_is_taken_as_it_is():
    with pytest.warns(UserWarning, match="has random weights and is frozen: its features stay random"):
        CNNEncoder("mobilenet_v3_small", 8, weights=None)
    with pytest.warns(UserWarning, match="starts from random weights: its last 2 blocks train from scratch"):
        CNNEncoder("mobilenet_v3_small", 8, weights=None, fine_tune=2)
    backbone = build_backbone("mobilenet_v3_small", None, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder = CNNEncoder(backbone, 8, fine_tune=1)
    assert encoder.backbone is backbone and encoder.backbone.trainable_blocks == 1
    with pytest.raises(ValueError, match="cell"):
        CNNEncoder(backbone, 8, cell="rnn")
