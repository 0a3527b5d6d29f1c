"""The RT-1-style VLA policy: shapes, FiLM identity, causality, caching, overfitting, weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied_rl.policies import VLAPolicy, load_policy, vla_preset
from embodied_rl.policies.encoders import FiLMEfficientNet, SentenceEncoder, images_to_float

SMALL_EFFNET = {
    "width_coefficient": 0.25,
    "depth_coefficient": 0.25,
    "image_size": 64,
}


@pytest.fixture(scope="module")
def tiny() -> VLAPolicy:
    torch.manual_seed(0)
    return VLAPolicy(vla_preset("tiny", history=3, dropout=0.0)).eval()


def batch(b=2, t=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, t, size, size, 3), dtype=torch.uint8, generator=g)
    return {
        "images": images,
        "instructions": ["pick up the red block", "stack the blue block on the red block"][:b],
    }


def test_sentence_encoder_is_pretrained_and_cached():
    enc = SentenceEncoder()
    a, b, c = enc(["pick up the red block", "lift the red block", "open the drawer"])
    assert a.shape == (384,) and torch.linalg.norm(a).item() == pytest.approx(1.0, abs=1e-5)
    assert (a @ b).item() > (a @ c).item() + 0.1  # paraphrases are closer: real pretrained weights
    assert len(enc._cache) == 3


@pytest.mark.parametrize("encoder", ["convnet", "efficientnet", "clip"])
def test_output_shapes_for_every_image_encoder(encoder):
    backbone = {
        "convnet": {},
        "efficientnet": SMALL_EFFNET,
        "clip": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "patch_size": 8,
        },
    }[encoder]
    config = vla_preset(
        "tiny", image_encoder=encoder, image_backbone=backbone, history=3, head="tokens"
    )
    policy = VLAPolicy(config).eval()
    logits = policy(batch())
    assert logits.shape == (2, 3, 4, 256)
    gaussian = VLAPolicy(vla_preset("tiny", history=3, head="gaussian", value_head=True)).eval()
    assert gaussian(batch()).shape == (2, 3, 4)
    assert gaussian.value(batch()).shape == (2, 3)


def test_film_is_the_identity_at_initialisation():
    from transformers import EfficientNetConfig

    torch.manual_seed(0)
    enc = FiLMEfficientNet(
        cond_dim=16, out_channels=8, backbone_config=EfficientNetConfig(**SMALL_EFFNET)
    ).eval()
    images = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        with_film = enc(images, torch.randn(2, 16))
        x = enc.backbone.embeddings(images_to_float(images))
        for block in enc.backbone.encoder.blocks:
            x = block(x)
        e = enc.backbone.encoder
        plain = enc.out(e.top_activation(e.top_bn(e.top_conv(x))))
        torch.testing.assert_close(with_film, plain)
        for film in enc.films:  # once trained, the instruction changes the features
            torch.nn.init.normal_(film.proj.weight, std=0.1)
        assert not torch.allclose(enc(images, torch.randn(2, 16)), enc(images, torch.randn(2, 16)))


def test_no_information_flows_from_future_frames(tiny):
    base = batch(t=3)
    changed = {**base, "images": base["images"].clone()}
    changed["images"][:, 2] = 255 - changed["images"][:, 2]  # alter only the last frame
    with torch.no_grad():
        a, b = tiny(base), tiny(changed)
    torch.testing.assert_close(a[:, :2], b[:, :2])  # earlier frames: unchanged
    assert not torch.allclose(a[:, 2], b[:, 2])
    past = {**base, "images": base["images"].clone()}
    past["images"][:, 0] = 0  # the past does reach the present
    with torch.no_grad():
        assert not torch.allclose(tiny(past)[:, 2], a[:, 2])


def test_padding_frames_are_ignored(tiny):
    full = batch(b=1, t=3)
    mask = torch.tensor([[False, True, True]])
    other = {**full, "images": full["images"].clone()}
    other["images"][:, 0] = 7  # content of a padded frame must not matter
    with torch.no_grad():
        a = tiny({**full, "frame_mask": mask})
        b = tiny({**other, "frame_mask": mask})
    torch.testing.assert_close(a[:, 1:], b[:, 1:])
    assert torch.isfinite(a).all()


def test_cached_acting_matches_the_batch_forward(tiny):
    frames = batch(b=1, t=3, seed=3)["images"][0]
    instruction = "pick up the red block"
    tiny.reset()
    acted = [tiny.act({"image": f.numpy(), "instruction": instruction}) for f in frames]
    with torch.no_grad():
        logits = tiny({"images": frames[None], "instructions": [instruction]})
    expected = tiny.head.mode(logits[0, -1]).numpy()
    np.testing.assert_allclose(acted[-1], expected, atol=1e-6)
    # The first step sees one real frame and two padded ones.
    with torch.no_grad():
        padded = torch.zeros_like(frames[None])
        padded[0, -1] = frames[0]
        first = tiny(
            {
                "images": padded,
                "instructions": [instruction],
                "frame_mask": torch.tensor([[False, False, True]]),
            }
        )
    np.testing.assert_allclose(acted[0], tiny.head.mode(first[0, -1]).numpy(), atol=1e-6)


def test_act_rejects_bad_observations(tiny):
    with pytest.raises(ValueError, match="instruction"):
        tiny.act({"image": np.zeros((64, 64, 3), np.uint8)})
    with pytest.raises(ValueError, match="expects 64x64"):
        tiny.act({"image": np.zeros((32, 32, 3), np.uint8), "instruction": "reach the red block"})


def test_tiny_policy_overfits_expert_demonstrations():
    """>= 95% token accuracy on a small batch of real demonstrations (RT-1's loss)."""
    from embodied_rl.envs import make, make_expert
    from embodied_rl.policies.action_tokenizer import action_token_loss

    env = make("tabletop/pick-v0", obs_mode="rgb", image_size=64, seed=0)
    expert = make_expert(env)
    images, actions, instructions = [], [], []
    for seed in range(2):
        obs, _ = env.reset(seed=seed)
        for step in range(18):  # every third frame: consecutive frames look nearly alike
            action = expert.act(obs)
            if step % 3 == 0:
                images.append(obs["image"])
                actions.append(action)
                instructions.append(obs["instruction"])
            obs, *_ = env.step(action)
    env.close()
    images = torch.as_tensor(np.stack(images)).view(4, 3, 64, 64, 3)  # 4 windows of 3 frames
    actions = torch.as_tensor(np.stack(actions)).view(4, 3, 4)
    demo = {"images": images, "instructions": instructions[::3]}
    torch.manual_seed(0)
    policy = VLAPolicy(vla_preset("tiny", history=3, dropout=0.0))
    tokens = policy.head.tokenizer.tokenize(actions)
    optimiser = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(120):
        loss, metrics = action_token_loss(policy(demo), tokens)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    policy.eval()
    with torch.no_grad():
        _, metrics = action_token_loss(policy(demo), tokens)
    assert metrics["token_accuracy"] >= 0.95, metrics


def test_save_load_gives_identical_actions(tmp_path, tiny):
    obs = {"image": np.full((64, 64, 3), 120, np.uint8), "instruction": "reach the red block"}
    tiny.reset()
    expected = tiny.act(obs)
    path = tiny.save(tmp_path / "policy")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    # The frozen pretrained sentence encoder is not duplicated into every checkpoint.
    assert (path / "model.safetensors").stat().st_size < 5_000_000
    loaded = load_policy(path).eval()
    loaded.reset()
    np.testing.assert_array_equal(loaded.act(obs), expected)


def test_loading_errors_name_the_problem(tmp_path, tiny):
    path = tiny.save(tmp_path / "policy")
    other = VLAPolicy(vla_preset("tiny", history=3, width=64, n_heads=4, dropout=0.0))
    from safetensors.torch import load_file

    from embodied_rl.policies.base import load_weights

    with pytest.raises(ValueError, match="shape mismatches.*token_proj.weight"):
        load_weights(other, load_file(path / "model.safetensors"))
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_policy(path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_policy(tmp_path)


def test_pretrained_image_encoder_loads_from_a_local_directory(tmp_path):
    from transformers import EfficientNetConfig, EfficientNetModel

    torch.manual_seed(1)
    pretrained = EfficientNetModel(EfficientNetConfig(**SMALL_EFFNET))
    pretrained.save_pretrained(tmp_path / "effnet")
    policy = VLAPolicy(
        vla_preset(
            "tiny",
            image_encoder="efficientnet",
            image_pretrained_path=str(tmp_path / "effnet"),
            history=2,
        )
    )
    loaded = policy.image_encoder.backbone.encoder.top_conv.weight
    torch.testing.assert_close(loaded, pretrained.encoder.top_conv.weight)


def test_config_validation():
    with pytest.raises(ValueError, match="image_encoder"):
        vla_preset("tiny", image_encoder="resnet")
    with pytest.raises(ValueError, match="divisible"):
        vla_preset("tiny", width=130)
    with pytest.raises(KeyError, match="rt2"):
        vla_preset("rt2")
