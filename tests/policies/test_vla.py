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
    # images only (RT-1's inputs): the proprio token has tests of its own below
    return VLAPolicy(vla_preset("tiny", history=3, dropout=0.0, proprio_dim=0)).eval()


def batch(b=2, t=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, t, size, size, 3), dtype=torch.uint8, generator=g)
    return {
        "images": images,
        "instructions": ["pick up the red block", "stack the blue block on the red block"][:b],
        "proprio": torch.zeros(b, t, 7),  # read by policies with proprio_dim=7 (the default)
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
    text = "reach the red block"
    with pytest.raises(ValueError, match=r"shape \(32, 32, 3\); the policy expects \(64, 64, 3\)"):
        tiny.act({"image": np.zeros((32, 32, 3), np.uint8), "instruction": text})
    with pytest.raises(ValueError, match="is float32; the policy reads uint8 pixels"):
        tiny.act({"image": np.full((64, 64, 3), 0.5, np.float32), "instruction": text})
    with pytest.raises(ValueError, match=r"act\(\) takes one observation"):
        tiny.act({"image": np.zeros((1, 64, 64, 3), np.uint8), "instruction": text})


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
    policy = VLAPolicy(
        vla_preset("tiny", history=3, dropout=0.0, head="tokens", proprio_dim=0, random_shift=0)
    )
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
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json there"):
        load_policy(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_policy(tmp_path / "missing")


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
    with pytest.raises(ValueError, match="random_shift=40"):
        vla_preset("tiny", random_shift=40)
    with pytest.raises(ValueError, match="one stride per stage"):
        vla_preset("tiny", convnet_strides=(2, 2))
    with pytest.raises(ValueError, match="proprio_dim=-1"):
        vla_preset("tiny", proprio_dim=-1)


# ---------------------------------------------------------------------- inputs beyond RT-1's
def test_random_shift_moves_each_sequence_by_at_most_pad_pixels_alike_in_every_frame():
    from embodied_rl.policies.encoders import random_shift

    torch.manual_seed(0)
    images = torch.zeros(64, 2, 16, 16, 3, dtype=torch.uint8)
    images[:, :, 8, 5] = 255  # one bright pixel at row 8, column 5 in every frame
    shifted = random_shift(images, pad=3)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    moves = set()
    for sequence in shifted:
        where = [torch.nonzero(frame[..., 0] == 255).tolist() for frame in sequence]
        assert where[0] == where[1] and len(where[0]) == 1  # the same shift in both frames
        ((row, col),) = where[0]
        assert abs(row - 8) <= 3 and abs(col - 5) <= 3
        moves.add((row - 8, col - 5))
    assert len(moves) > 10  # shifts differ between sequences
    torch.testing.assert_close(random_shift(images, pad=0), images)


def test_position_features_are_coordinates_that_token_learner_pools_into_keypoints():
    from embodied_rl.policies.encoders import TokenLearner, with_coordinates

    features = torch.zeros(1, 4, 5, 7)
    grid = with_coordinates(features)
    assert grid.shape == (1, 6, 5, 7)
    x, y = grid[0, 4], grid[0, 5]
    assert x[0, 0] == -1 and x[0, -1] == 1 and y[0, 0] == -1 and y[-1, 0] == 1
    assert torch.all(x[0] == x[-1]) and torch.all(y[:, 0] == y[:, -1])  # x along width
    # attention concentrated on one cell: the pooled token's last channels are its (x, y)
    learner = TokenLearner(6, n_tokens=1)
    with torch.no_grad():
        learner.attention[-1].weight.zero_()
        learner.attention[-1].bias.zero_()
    features[0, 0, 3, 6] = 50.0  # a peak the attention can find through the layer norm
    with torch.no_grad():
        learner.attention[0].weight.zero_()
        learner.attention[0].weight[0, 0] = 1.0
        learner.attention[-1].weight[0, 0] = 100.0
    token = learner(with_coordinates(features))[0, 0]
    torch.testing.assert_close(token[4:], torch.tensor([1.0, 0.5]), atol=1e-3, rtol=0)


def test_proprio_token_feeds_the_action_and_travels_with_the_weights(tmp_path):
    torch.manual_seed(0)
    config = vla_preset(
        "tiny", history=2, dropout=0.0, proprio_dim=7, position_features=True,
        convnet_strides=(2, 2, 1, 1), head="deterministic",
    )  # fmt: skip
    policy = VLAPolicy(config).eval()
    policy.proprio_norm.fit(np.random.default_rng(0).normal(0.1, 0.05, size=(100, 7)))
    inputs = {**batch(b=2, t=2), "proprio": torch.zeros(2, 2, 7)}
    with torch.no_grad():
        out = policy(inputs)
        moved = policy({**inputs, "proprio": torch.ones(2, 2, 7)})
    assert out.shape == (2, 2, 4) and not torch.allclose(out, moved)
    # acting one frame at a time matches the batch forward
    policy.reset()
    frames = inputs["images"][0]
    acted = [
        policy.act({"image": f.numpy(), "instruction": inputs["instructions"][0],
                    "proprio": np.zeros(7, np.float32)})
        for f in frames
    ]  # fmt: skip
    np.testing.assert_allclose(acted[-1], out[0, -1].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match=r"reads obs\['proprio'\], which the observation lacks"):
        policy.act({"image": frames[0].numpy(), "instruction": "reach the red block"})
    policy.save(tmp_path / "p")
    loaded = load_policy(tmp_path / "p").eval()
    torch.testing.assert_close(loaded.proprio_norm.mean, policy.proprio_norm.mean)
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), out)


def test_random_shift_applies_only_while_training():
    torch.manual_seed(0)
    policy = VLAPolicy(vla_preset("tiny", history=1, dropout=0.0, random_shift=4))
    inputs = batch(b=2, t=1)
    with torch.no_grad():
        policy.train()
        a, b = policy(inputs), policy(inputs)
        policy.eval()
        c, d = policy(inputs), policy(inputs)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(c, d)
