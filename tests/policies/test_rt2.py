"""The RT-2-style policy: action bins as vocabulary ids of a tiny LLaVA, constrained decoding."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from embodied_rl.policies import (
    RT2Config,
    RT2Policy,
    load_policy,
    rt2_state_range,
    rt2_tokenizer,
)

INSTRUCTIONS = ["move to the red block", "move to the green block", "move to the blue block"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(scope="module")
def tokenizer_json() -> str:
    return rt2_tokenizer(INSTRUCTIONS).backend_tokenizer.to_str()


def small_policy(tokenizer_json: str, **overrides) -> RT2Policy:
    config = RT2Config(tokenizer_json=tokenizer_json, image_size=32, patch_size=8,
                       vision_width=32, text_width=64, **overrides)  # fmt: skip
    return RT2Policy(config)


def images_of(colours: list[str]) -> torch.Tensor:
    return torch.stack(
        [torch.tensor(COLOURS[c], dtype=torch.uint8).expand(32, 32, 3) for c in colours]
    )


def test_action_tokens_are_appended_after_the_words(tokenizer_json):
    policy = small_policy(tokenizer_json)
    tok = policy.tokenizer
    words = tok("move to the red block", add_special_tokens=False)["input_ids"]
    assert max(words) < policy.image_token_id < policy.first_action_id
    assert len(tok) == policy.first_action_id + 256  # <act_0>..<act_255> are the last ids
    assert tok.convert_ids_to_tokens(policy.first_action_id + 17) == "<act_17>"
    actions = torch.tensor([[-1.0, 0.0, 0.999, 0.5]])
    ids = policy.action_ids(actions)
    assert ids.min() >= policy.first_action_id and ids.max() < len(tok)


def test_cached_greedy_decoding_equals_the_teacher_forced_argmax_over_action_ids(tokenizer_json):
    """Decoding with the KV cache, with left-padded prompts of different lengths, chooses at
    every dimension the argmax of the teacher-forced logits restricted to the action ids, even
    when the language model prefers a word (here by +1e4 on a word's logit)."""
    torch.manual_seed(0)
    policy = small_policy(tokenizer_json).eval()
    word = 5
    policy.model.lm_head.register_forward_hook(
        lambda module, args, out: out + 1e4 * torch.nn.functional.one_hot(
            torch.tensor(word), out.shape[-1])
    )  # fmt: skip
    colours = ["red", "blue", "green"]
    instructions = ["move to the red block", "go", "move to the green block, then stop there"]
    bins = policy.generate_bins(images_of(colours), instructions)
    assert bins.shape == (3, 4) and bins.min() >= 0 and bins.max() < 256
    actions = policy.tokenizer_actions.detokenize(bins)
    batch = {"image": images_of(colours), "instruction": instructions, "action": actions}
    with torch.no_grad():
        logits = policy(batch)  # (3, 4, 256)
    torch.testing.assert_close(logits.argmax(-1), bins, rtol=0, atol=0)
    # each row alone gives the same logits as inside the left-padded batch
    for i in range(3):
        one = {k: (v[i : i + 1] if torch.is_tensor(v) else v[i : i + 1]) for k, v in batch.items()}
        with torch.no_grad():
            torch.testing.assert_close(policy(one), logits[i : i + 1], atol=1e-4, rtol=1e-4)


def test_log_prob_and_entropy_read_the_bin_distributions(tokenizer_json):
    torch.manual_seed(0)
    policy = small_policy(tokenizer_json)
    actions = torch.rand(2, 4) * 2 - 1
    batch = {"image": images_of(["red", "green"]), "instruction": INSTRUCTIONS[:2]}
    logits = policy({**batch, "action": actions})
    bins = policy.tokenizer_actions.tokenize(actions)
    expected = logits.log_softmax(-1).gather(-1, bins[..., None])[..., 0].sum(-1)
    torch.testing.assert_close(policy.log_prob(batch, actions), expected)
    entropy = policy.entropy({**batch, "action": actions})
    assert entropy.shape == (2,) and bool((entropy > 0).all())
    assert bool((entropy <= 4 * np.log(256) + 1e-4).all())


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_save_and_load_give_the_same_actions(tokenizer_json, tmp_path, stem):
    torch.manual_seed(0)
    policy = small_policy(tokenizer_json, vision_stem=stem).eval()
    embeddings = policy.model.model.vision_tower.embeddings
    assert (type(embeddings.patch_embedding).__name__ == "ConvStem") == (stem == "conv")
    obs = {"image": images_of(["blue"])[0].numpy(), "instruction": "move to the blue block"}
    loaded = load_policy(policy.save(tmp_path / "rt2"))
    assert sorted(p.name for p in (tmp_path / "rt2").iterdir()) == [
        "config.json", "model.safetensors"]  # fmt: skip
    np.testing.assert_array_equal(loaded.act(obs), policy.act(obs))
    gen = torch.Generator().manual_seed(3)
    sampled = policy.generate_bins(images_of(["blue"] * 64), ["go"] * 64, False, gen)
    assert sampled.unique().numel() > 8  # sampling spreads over the bins of a fresh model


def test_mean_decoding_chooses_the_expected_bin_and_feeds_it_back(tokenizer_json):
    """``decoding="mean"``: every dimension's bin is the rounded expectation of the
    teacher-forced bin distribution given the earlier chosen bins; argmax differs."""
    torch.manual_seed(0)
    policy = small_policy(tokenizer_json, decoding="mean").eval()
    colours, instructions = ["red", "blue"], ["move to the red block", "go"]
    bins = policy.generate_bins(images_of(colours), instructions)
    batch = {"image": images_of(colours), "instruction": instructions,
             "action": policy.tokenizer_actions.detokenize(bins)}  # fmt: skip
    with torch.no_grad():
        probs = policy(batch).softmax(-1)  # (2, 4, 256), each dim given the chosen earlier bins
    expected = (probs * torch.arange(256)).sum(-1)
    assert ((expected - bins).abs() <= 0.5 + 1e-3).all()
    argmax = RT2Policy(replace(policy.config, decoding="argmax")).eval()
    argmax.load_state_dict(policy.state_dict())
    assert not torch.equal(argmax.generate_bins(images_of(colours), instructions), bins)
    with pytest.raises(ValueError, match="decoding='median'"):
        replace(policy.config, decoding="median")


def test_image_after_the_text_lets_the_image_tokens_see_the_instruction(tokenizer_json):
    """``image_position="after_text"`` puts the image placeholders between the question and
    ``Out:``; the action logits then depend on the instruction through the image tokens too,
    and cached decoding still equals the teacher-forced argmax."""
    torch.manual_seed(0)
    policy = small_policy(tokenizer_json, image_position="after_text").eval()
    text = policy.prompt("move to the red block")
    image = policy.image_token * policy.n_image_tokens
    assert (
        text == "In: What action should the robot take to move to the red block?" + image + "\nOut:"
    )
    assert policy.question_prompt("how many blocks?").endswith(image + "\nOut:")
    first = small_policy(tokenizer_json)
    assert first.prompt("go").startswith(image + "In:")
    colours, instructions = ["red", "green"], ["move to the red block", "move to the green block"]
    bins = policy.generate_bins(images_of(colours), instructions)
    batch = {"image": images_of(colours), "instruction": instructions,
             "action": policy.tokenizer_actions.detokenize(bins)}  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(policy(batch).argmax(-1), bins, rtol=0, atol=0)

        # the image tokens' hidden states change with the instruction after the text only
        def image_states(p, instruction):
            ids, mask = p.prompt_inputs([instruction])
            out = p._run(images_of(["red"]), ids, mask, output_hidden_states=True)
            return out.hidden_states[-1][0][ids[0] == p.image_token_id]

        red, blue = "move to the red block", "move to the blue block"
        assert not torch.allclose(image_states(policy, red), image_states(policy, blue))
        first.eval()
        torch.testing.assert_close(image_states(first, red), image_states(first, blue))
    with pytest.raises(ValueError, match="image_position='middle'"):
        replace(policy.config, image_position="middle")


def test_bad_inputs_are_named(tokenizer_json):
    policy = small_policy(tokenizer_json)
    image = images_of(["red"])[0].numpy()
    with pytest.raises(ValueError, match="teacher-forced"):
        policy({"image": images_of(["red"]), "instruction": ["go"]})
    with pytest.raises(ValueError, match="uint8"):
        policy.act({"image": image.astype(np.float32), "instruction": "go"})
    with pytest.raises(ValueError, match="text obs\\['instruction'\\]"):
        policy.act({"image": image, "instruction": np.array([3, 4])})
    with pytest.raises(ValueError, match="max_positions"):
        policy.act({"image": image, "instruction": "go " * 400})
    plain = rt2_tokenizer(INSTRUCTIONS, n_bins=16).backend_tokenizer.to_str()
    with pytest.raises(ValueError, match="contiguous tokens <act_0>..<act_255>"):
        RT2Policy(RT2Config(tokenizer_json=plain))
    with pytest.raises(ValueError, match="patch_size=6 must be a power of 2"):
        RT2Config(tokenizer_json=plain, image_size=36, patch_size=6, vision_stem="conv")
    with pytest.raises(ValueError, match="vision_stem='cnn'"):
        RT2Config(tokenizer_json=plain, vision_stem="cnn")


def coloured_dataset(
    targets: dict[str, list[float]], episodes_per_colour: int = 2, length: int = 4,
    sign: float = 1.0, reward: float = 0.0,
):  # fmt: skip
    """Episodes whose every image is one colour and whose actions are ``sign`` times that
    colour's target, with ``reward`` at every step."""
    from gymnasium import spaces

    from embodied_rl.datasets import Episode, OfflineDataset

    episodes = []
    for colour, target in list(targets.items()) * episodes_per_colour:
        image = images_of([colour])[0].numpy()
        flags = np.zeros(length, dtype=bool)
        flags[-1] = True
        episodes.append(Episode(
            observations={"image": np.stack([image] * (length + 1)),
                          "instruction": ["move to the block"] * (length + 1)},
            actions=np.tile(np.float32(target) * sign, (length, 1)),
            rewards=np.full(length, reward),
            terminations=flags, truncations=~flags, infos={}, metadata={},
        ))  # fmt: skip
    obs_space = spaces.Dict({"image": spaces.Box(0, 255, (32, 32, 3), np.uint8),
                             "instruction": spaces.Text(max_length=40)})  # fmt: skip
    return OfflineDataset.from_episodes(
        episodes, obs_space, spaces.Box(-1.0, 1.0, (4,), np.float32)
    )


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_supervised_fine_tuning_is_behaviour_cloning(tokenizer_json, tmp_path, stem):
    """The LLM trainers' SFTTrainer, given the policy's model, tokenizer and image processor,
    trains on (image, instruction) -> action-token examples of a dataset; the policy then acts
    the demonstrated actions, which only the images tell apart (with either vision stem)."""
    from embodied_rl.llm.sft import SFTConfig, SFTTrainer
    from embodied_rl.policies.rt2 import rt2_sft_examples

    torch.manual_seed(0)
    policy = small_policy(tokenizer_json, vision_stem=stem)
    targets = {"red": [0.5, -0.5, 0.0, 1.0], "green": [-0.8, 0.2, 0.6, -1.0],
               "blue": [0.1, 0.9, -0.7, 0.3]}  # fmt: skip
    data = coloured_dataset(targets)
    examples, images = rt2_sft_examples(policy, data)
    assert len(examples) == len(images) == data.n_transitions == 24
    prompt, response = examples[0]
    ids = policy.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert (
        ids == policy.prompt_ids("move to the block") and ids[:16] == [policy.image_token_id] * 16
    )
    assert response == policy.action_tokens(targets["red"]) and len(response) == 4
    assert min(response) >= policy.first_action_id
    config = SFTConfig(steps=120, batch_size=12, learning_rate=2e-3, max_length=64,
                       progress=False, tensorboard=False, log_every=40)  # fmt: skip
    trainer = SFTTrainer(
        policy.model, policy.tokenizer, config, image_processor=policy.pixel_values
    )
    rows = trainer.train(examples, out=tmp_path / "sft", images=images)
    assert rows[-1]["train/loss"] < 0.1 < rows[0]["train/loss"]
    policy.eval()
    for colour, target in targets.items():
        obs = {"image": images_of([colour])[0].numpy(), "instruction": "move to the block"}
        np.testing.assert_allclose(policy.act(obs), target, atol=1 / 256 + 1e-6)
    with pytest.raises(ValueError, match="image_processor"):
        SFTTrainer(policy.model, policy.tokenizer, config).train(examples, images=images)
    with pytest.raises(ValueError, match="pass images="):
        trainer.train(examples)


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory) -> str:
    """A tiny random LLaVA saved with its processor, as a user's local checkpoint would be."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    from embodied_rl.policies.rt2 import PROMPT, build_tiny_vlm
    from embodied_rl.utils.tokenizer import train_tokenizer

    rng = np.random.default_rng(0)
    words = [f"{a}{b}" for a in ("red", "blue", "pick", "push", "left", "cube")
             for b in ("", "s", "ed", "ing", "er")]  # fmt: skip
    texts = [PROMPT.format(instruction=" ".join(rng.choice(words, 6))) for _ in range(500)]
    tokenizer = train_tokenizer(texts, vocab_size=600)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    config = RT2Config(tokenizer_json="-", image_size=32, vision_width=32, text_width=64)
    model = build_tiny_vlm(config, len(tokenizer), image_id, tokenizer.pad_token_id)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                           crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        image_token="<image>", num_additional_image_tokens=1,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


def test_a_pretrained_vlm_from_a_local_directory(pretrained_dir, tmp_path):
    """OpenVLA's recipe on a transformers LLaVA checkpoint: the processor prepares images and
    sets the image tokens, the last 256 ids of the base vocabulary are the actions, decoding
    stays on them, and a saved policy reloads (weights from model.safetensors)."""
    torch.manual_seed(0)
    policy = RT2Policy(RT2Config(model_path=pretrained_dir)).eval()
    tok = policy.tokenizer
    assert policy.n_image_tokens == 16 and policy.first_action_id == tok.vocab_size - 256
    assert policy.prompt_ids("pick the red cube")[:16] == [policy.image_token_id] * 16
    image = np.full((48, 40, 3), 200, np.uint8)  # the processor resizes and crops
    obs = {"image": image, "instruction": "pick the red cube"}
    action = policy.act(obs)
    assert action.shape == (4,) and np.all(np.abs(action) <= 1)
    bins = policy.generate_bins(torch.as_tensor(image)[None], ["pick the red cube"])
    actions = policy.tokenizer_actions.detokenize(bins)
    logits = policy({"image": torch.as_tensor(image)[None], "instruction": ["pick the red cube"],
                     "action": actions})  # fmt: skip
    torch.testing.assert_close(logits.argmax(-1), bins, rtol=0, atol=0)
    with torch.no_grad():
        policy.model.lm_head.weight[policy.first_action_id + 7] += 5.0  # "fine-tuned"
    loaded = load_policy(policy.save(tmp_path / "rt2"))
    np.testing.assert_array_equal(loaded.act(obs), policy.act(obs))
    with pytest.raises(ValueError, match="not both"):
        RT2Config(model_path=pretrained_dir, tokenizer_json="x")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        RT2Policy(RT2Config(model_path=str(tmp_path)))


def test_dpo_on_action_pairs_prefers_the_chosen_actions(tokenizer_json):
    """The LLM trainers' DPOTrainer on (image, instruction) -> chosen vs rejected action
    tokens: after training, each scene's chosen action is more likely than before and than the
    rejected one, and the frozen reference is a copy that did not move."""
    from embodied_rl.llm.dpo import DPOConfig, DPOTrainer
    from embodied_rl.llm.pairs import TextPair

    torch.manual_seed(0)
    policy = small_policy(tokenizer_json)
    chosen = {"red": [0.5, -0.5, 0.0, 1.0], "green": [-0.8, 0.2, 0.6, -1.0],
              "blue": [0.1, 0.9, -0.7, 0.3]}  # fmt: skip
    colours = list(chosen)
    images = images_of(colours)
    pairs = [
        TextPair(policy.prompt("move to the block"), policy.action_tokens(chosen[c]),
                 policy.action_tokens([-v for v in chosen[c]]), image=i)
        for i, c in enumerate(colours)
    ]  # fmt: skip
    batch = {"image": images, "instruction": ["move to the block"] * 3}
    good = torch.tensor([chosen[c] for c in colours])
    with torch.no_grad():
        before = policy.log_prob(batch, good)
    config = DPOConfig(steps=40, batch_size=3, learning_rate=1e-3, beta=0.1, max_length=64,
                       progress=False, tensorboard=False, log_every=40)  # fmt: skip
    trainer = DPOTrainer(
        policy.model, policy.tokenizer, config, image_processor=policy.pixel_values
    )
    assert not trainer.head_split and not trainer.shared_prompt
    reference = {k: v.clone() for k, v in trainer.reference.state_dict().items()}
    trainer.train(pairs, images=images)
    metrics = trainer.evaluate(pairs, images=images)
    assert metrics["reward_accuracy"] == 1.0 and metrics["reward_margin"] > 1.0
    with torch.no_grad():
        after, rejected = policy.log_prob(batch, good), policy.log_prob(batch, -good)
    assert bool((after > before + 1.0).all()) and bool((after > rejected).all())
    for k, v in trainer.reference.state_dict().items():
        torch.testing.assert_close(v, reference[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="point at images"):
        trainer.evaluate([TextPair("x", [1], [2], image=7)], images=images)


def test_co_fine_tuning_on_scene_questions_and_actions(tmp_path):
    """RT-2's co-fine-tuning: one SFT run on a mix of robot examples (image, instruction ->
    action tokens) and vision-language examples (image, question -> text answer); the policy
    then answers the questions from the image and still acts."""
    from embodied_rl.llm.sft import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    question = "what colour is the block?"
    tok = rt2_tokenizer(INSTRUCTIONS, texts=[f"In: {question}\nOut: {c}" for c in COLOURS])
    policy = small_policy(tok.backend_tokenizer.to_str())
    targets = {"red": [0.5, -0.5, 0.0, 1.0], "green": [-0.8, 0.2, 0.6, -1.0],
               "blue": [0.1, 0.9, -0.7, 0.3]}  # fmt: skip
    colours = list(targets) * 4
    robot = [
        (policy.prompt("move to the block"), policy.action_tokens(targets[c])) for c in colours
    ]
    vqa = [(policy.question_prompt(question), " " + c) for c in colours]
    images = torch.cat([images_of(colours), images_of(colours)])
    config = SFTConfig(steps=150, batch_size=12, learning_rate=2e-3, max_length=64,
                       progress=False, tensorboard=False, log_every=50)  # fmt: skip
    trainer = SFTTrainer(
        policy.model, policy.tokenizer, config, image_processor=policy.pixel_values
    )
    trainer.train(robot + vqa, images=images)
    policy.eval()
    assert policy.answer(images_of(list(targets)), [question] * 3) == list(targets)
    obs = {"image": images_of(["blue"])[0].numpy(), "instruction": "move to the block"}
    np.testing.assert_allclose(policy.act(obs), targets["blue"], atol=1 / 256 + 1e-6)


def test_dpo_on_trajectory_preferences(tokenizer_json):
    """DPO over segment pairs labelled by return (the B-Pref teacher's rule): a segment's
    log-probability is the sum of its steps' action tokens, each step with its own image;
    after training the policy prefers the rewarded behaviour in every scene."""
    from embodied_rl.datasets.offline import concatenate
    from embodied_rl.llm.dpo import DPOConfig, DPOTrainer
    from embodied_rl.llm.rt2 import rt2_segment_pairs
    from embodied_rl.preference.data import PreferenceDataset, Segments

    torch.manual_seed(0)
    policy = small_policy(tokenizer_json)
    targets = {"red": [0.5, -0.5, 0.0, 1.0], "green": [-0.8, 0.2, 0.6, -1.0],
               "blue": [0.1, 0.9, -0.7, 0.3]}  # fmt: skip
    good, bad = coloured_dataset(targets, 1, reward=1.0), coloured_dataset(targets, 1, sign=-1.0)
    data = concatenate([good, bad])
    segments = Segments(data, data.episode_starts[:-1], length=3)  # one per episode
    returns = segments.returns()
    first, second = np.arange(3), np.arange(3, 6)  # good episode i vs bad episode i
    labels = np.where(returns[first] > returns[second], 1.0, 0.0)
    # the same pairs asked the other way round, and one tie that must be left out
    prefs = PreferenceDataset(segments, np.r_[first, second, 0], np.r_[second, first, 1],
                              np.r_[labels, 1 - labels, 0.5])  # fmt: skip
    pairs, images = rt2_segment_pairs(policy, prefs)
    assert len(pairs) == 6 and all(len(p.chosen) == 3 for p in pairs)
    assert images.shape == (6 * 3, 32, 32, 3)
    chosen_first = pairs[0].chosen[0]
    assert chosen_first[1] == policy.action_tokens(targets["red"])
    batch = {"image": images_of(list(targets)), "instruction": ["move to the block"] * 3}
    better = torch.tensor(list(targets.values()))
    with torch.no_grad():
        before = policy.log_prob(batch, better) - policy.log_prob(batch, -better)
    config = DPOConfig(steps=30, batch_size=3, learning_rate=1e-3, beta=0.1, max_length=64,
                       progress=False, tensorboard=False, log_every=30)  # fmt: skip
    trainer = DPOTrainer(
        policy.model, policy.tokenizer, config, image_processor=policy.pixel_values
    )
    trainer.train(pairs, images=images)
    assert trainer.evaluate(pairs, images=images)["reward_accuracy"] == 1.0
    with torch.no_grad():
        after = policy.log_prob(batch, better) - policy.log_prob(batch, -better)
    assert bool((after > before + 1.0).all()) and bool((after > 0).all())


def test_train_pixel_values_shift_each_image_by_at_most_the_configured_pixels(tokenizer_json):
    """DrQ's augmentation for behaviour cloning: each image is the original shifted by one
    (dy, dx) within +-random_shift (edges repeated); acting reads the plain images."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8)
    plain = small_policy(tokenizer_json)
    assert torch.equal(plain.train_pixel_values(images), plain.pixel_values(images))
    policy = small_policy(tokenizer_json, random_shift=3)
    shifted = policy.train_pixel_values(images)
    assert shifted.shape == plain.pixel_values(images).shape
    assert not torch.equal(shifted, policy.pixel_values(images))
    idx = torch.arange(32)
    for i in range(8):
        matches = [
            (dy, dx)
            for dy in range(-3, 4)
            for dx in range(-3, 4)
            if torch.equal(
                shifted[i],
                policy.pixel_values(
                    images[i : i + 1][:, (idx + dy).clamp(0, 31)][:, :, (idx + dx).clamp(0, 31)]
                )[0],
            )
        ]
        assert matches  # some shift within the bound reproduces the image
    with pytest.raises(ValueError, match="random_shift=16"):
        small_policy(tokenizer_json, random_shift=16)


def state_dataset(targets: dict[tuple[float, float], list[float]], episodes: int = 2):
    """Episodes that all show the same red image; each has a constant 3-entry ``proprio``
    (its key, then a distractor entry) and acts that key's target: only the state tells the
    targets apart."""
    from gymnasium import spaces

    from embodied_rl.datasets import Episode, OfflineDataset

    out, length = [], 4
    for (a, b), target in list(targets.items()) * episodes:
        flags = np.zeros(length, dtype=bool)
        flags[-1] = True
        proprio = np.tile(np.float32([a, 7.0, b]), (length + 1, 1))
        out.append(Episode(
            observations={"image": np.stack([images_of(["red"])[0].numpy()] * (length + 1)),
                          "instruction": ["move to the block"] * (length + 1), "proprio": proprio},
            actions=np.tile(np.float32(target), (length, 1)), rewards=np.zeros(length),
            terminations=flags, truncations=~flags, infos={}, metadata={},
        ))  # fmt: skip
    obs_space = spaces.Dict({"image": spaces.Box(0, 255, (32, 32, 3), np.uint8),
                             "instruction": spaces.Text(max_length=40),
                             "proprio": spaces.Box(-np.inf, np.inf, (3,), np.float32)})  # fmt: skip
    return OfflineDataset.from_episodes(out, obs_space, spaces.Box(-1.0, 1.0, (4,), np.float32))


STATE_TARGETS = {(-0.5, 0.2): [0.5, -0.5, 0.0, 1.0], (0.5, 0.2): [-0.8, 0.2, 0.6, -1.0],
                 (0.5, -0.9): [0.1, 0.9, -0.7, 0.3]}  # fmt: skip


def test_state_tokens_follow_the_question_and_condition_the_actions(tokenizer_json, tmp_path):
    """``RT2Config(state_key=...)``: the chosen state entries, binned over the data's range
    (``rt2_state_range``), are action ids between ``" State:"`` and ``"\\nOut:"`` (before the
    image with ``image_position="after_text"``); behaviour cloning through the SFT trainer
    learns actions that only the state tells apart, a saved policy acts the same, and the
    teacher-forced log-probabilities read the same prompt as decoding."""
    from embodied_rl.llm.sft import SFTConfig, SFTTrainer
    from embodied_rl.policies.rt2 import OUT, STATE, rt2_sft_examples

    torch.manual_seed(0)
    data = state_dataset(STATE_TARGETS)
    fields = rt2_state_range(data, "proprio", (0, 2))
    assert fields["state_low"] == pytest.approx((-0.55, -0.955))
    assert fields["state_high"] == pytest.approx((0.55, 0.255))
    policy = small_policy(tokenizer_json, **fields)
    state = np.float32([0.5, 7.0, -0.9])
    ids = policy.prompt_ids("move to the block", state)
    bins = policy.tokenizer_state.tokenize(torch.tensor(state[[0, 2]])).tolist()
    n_out = len(policy.tokenizer(OUT, add_special_tokens=False)["input_ids"])
    assert ids[-n_out - 2 : -n_out] == [policy.first_action_id + b for b in bins]
    assert policy.tokenizer.decode(ids[-n_out:]) == OUT
    assert ids[:16] == [policy.image_token_id] * 16
    assert policy.tokenizer.decode(ids[16 : -n_out - 2]).endswith("block?" + STATE)
    late = small_policy(tokenizer_json, image_position="after_text", **fields)
    late_ids = late.prompt_ids("move to the block", state)
    assert late_ids[-n_out - 16 - 2 : -n_out - 16] == ids[-n_out - 2 : -n_out]
    assert late_ids[-n_out - 16 : -n_out] == [late.image_token_id] * 16

    examples, images = rt2_sft_examples(policy, data)
    assert examples[0][0] == policy.prompt_ids("move to the block", data.observations["proprio"][0])
    config = SFTConfig(steps=150, batch_size=12, learning_rate=2e-3, max_length=64,
                       progress=False, tensorboard=False, log_every=50)  # fmt: skip
    SFTTrainer(policy.model, policy.tokenizer, config, image_processor=policy.pixel_values).train(
        examples, out=tmp_path / "sft", images=images
    )
    policy.eval()
    red = images_of(["red"])[0].numpy()
    for (a, b), target in STATE_TARGETS.items():
        obs = {"image": red, "instruction": "move to the block", "proprio": np.float32([a, 7, b])}
        np.testing.assert_allclose(policy.act(obs), target, atol=1 / 256 + 1e-6)
    loaded = load_policy(policy.save(tmp_path / "rt2"))
    assert loaded.input_keys == ("image", "instruction", "proprio")
    np.testing.assert_array_equal(loaded.act(obs), policy.act(obs))
    # decoding and teacher forcing read the same prompt: greedy bins are the forced argmax
    states = np.float32([[a, 0, b] for a, b in STATE_TARGETS])
    bins = policy.generate_bins(images_of(["red"] * 3), ["move to the block"] * 3, states=states)
    batch = {"image": images_of(["red"] * 3), "instruction": ["move to the block"] * 3,
             "proprio": states, "action": policy.tokenizer_actions.detokenize(bins)}  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(policy(batch).argmax(-1), bins, rtol=0, atol=0)


def test_state_settings_and_inputs_are_checked(tokenizer_json):
    data = state_dataset(STATE_TARGETS, 1)
    policy = small_policy(tokenizer_json, **rt2_state_range(data, "proprio", (0, 2)))
    red = images_of(["red"])[0].numpy()
    with pytest.raises(ValueError, match="reads 'proprio' as state tokens"):
        policy.act({"image": red, "instruction": "go"})
    with pytest.raises(ValueError, match="has 2 entries; the policy reads entries"):
        policy.act({"image": red, "instruction": "go", "proprio": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="give each prompt its state"):
        policy.prompt_ids("go")
    with pytest.raises(ValueError, match="state_low and state_high of one length"):
        RT2Config(tokenizer_json=tokenizer_json, state_key="proprio", state_low=(0.0,))
    with pytest.raises(ValueError, match="must lie below"):
        RT2Config(tokenizer_json=tokenizer_json, state_key="proprio", state_low=(1.0,),
                  state_high=(0.0,))  # fmt: skip
    with pytest.raises(ValueError, match="need state_key"):
        RT2Config(tokenizer_json=tokenizer_json, state_low=(0.0,), state_high=(1.0,))
    with pytest.raises(ValueError, match="no 'joints' observations"):
        rt2_state_range(data, "joints")


FILM = {"vision_tower": "film", "image_position": "after_text", "film_channels": (16, 16, 32),
        "film_strides": (2, 2, 1), "vision_tokens": 4}  # fmt: skip


def two_colour_images(pairs: list[tuple[str, str]]) -> torch.Tensor:
    """32-px images whose left half is the first colour of each pair, the right half the second."""
    rows = []
    for left, right in pairs:
        image = torch.empty(32, 32, 3, dtype=torch.uint8)
        image[:, :16] = torch.tensor(COLOURS[left], dtype=torch.uint8)
        image[:, 16:] = torch.tensor(COLOURS[right], dtype=torch.uint8)
        rows.append(image)
    return torch.stack(rows)


def test_the_film_tower_reads_the_question_before_the_image(tokenizer_json):
    """``vision_tower="film"``: the image tokens come from a FiLM ConvNet conditioned on the
    question's tokens (before the image; padding and state/action ids excluded), pooled with a
    learned query (at zero: their mean input embedding), so they change with the instruction and not with the batch's padding, and
    cached decoding still equals the teacher-forced argmax."""
    torch.manual_seed(0)
    policy = small_policy(tokenizer_json, **FILM).eval()
    assert policy.n_image_tokens == 4
    inner = policy.model.model
    for film in inner.vision_tower.convnet.films:  # zero-initialised: make them act
        torch.nn.init.normal_(film.proj.weight, std=3.0)
    red, long = "move to the red block", "move to the green block " + "and the blue block " * 3
    ids, mask = policy.prompt_inputs([red, long])
    question = policy._encode("In: What action should the robot take to move to the red block?")
    wte = inner.get_input_embeddings().weight
    with torch.no_grad():
        torch.testing.assert_close(inner.instruction_embedding(ids, mask)[0], wte[question].mean(0))
        inner.text_query.data.normal_()
        weights = (wte[question] @ inner.text_query / wte.shape[1] ** 0.5).softmax(0)
        torch.testing.assert_close(
            inner.instruction_embedding(ids, mask)[0], weights @ wte[question]
        )

        def image_tokens(instructions, colours):
            ids, mask = policy.prompt_inputs(instructions)
            out = policy._run(images_of(colours), ids, mask, output_hidden_states=True)
            return out.hidden_states[0][ids == policy.image_token_id].view(len(ids), 4, -1)

        alone = image_tokens([red], ["red"])[0]
        torch.testing.assert_close(image_tokens([red, long], ["red", "red"])[0], alone)
        blue = image_tokens(["move to the blue block"], ["red"])[0]
        assert (alone - blue).abs().max() > 1e-4
    colours, instructions = ["red", "green"], [red, long]
    bins = policy.generate_bins(images_of(colours), instructions)
    batch = {"image": images_of(colours), "instruction": instructions,
             "action": policy.tokenizer_actions.detokenize(bins)}  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(policy(batch).argmax(-1), bins, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs image_position='after_text'"):
        RT2Config(tokenizer_json=tokenizer_json, vision_tower="film")
    with pytest.raises(ValueError, match="vision_tower='cnn'"):
        RT2Config(tokenizer_json=tokenizer_json, vision_tower="cnn")
    with pytest.raises(ValueError, match="one stride per stage"):
        replace(policy.config, film_strides=(2, 2))
    with pytest.raises(ValueError, match="pass input_ids with pixel_values"):
        embeds = inner.get_input_embeddings()(ids)
        policy.model(inputs_embeds=embeds, attention_mask=mask,
                     pixel_values=policy.pixel_values(images_of(["red", "red"])))  # fmt: skip


def test_sft_with_the_film_tower_binds_the_instruction_to_the_image(tokenizer_json, tmp_path):
    """Two colours per image; the action's first entry says on which side the *named* colour
    is, so neither the image nor the instruction alone gives it. The SFT trainer learns it
    through the instruction-conditioned tower (its FiLM layers leave zero), and a saved policy
    acts the same."""
    from gymnasium import spaces

    from embodied_rl.datasets import Episode, OfflineDataset
    from embodied_rl.llm.sft import SFTConfig, SFTTrainer
    from embodied_rl.policies.rt2 import rt2_sft_examples

    torch.manual_seed(0)
    policy = small_policy(tokenizer_json, **FILM)
    pairs = [(a, b) for a in COLOURS for b in COLOURS if a != b]
    episodes, cases = [], []
    for (left, right), image in zip(pairs, two_colour_images(pairs).numpy(), strict=True):
        for named, side in ((left, -0.5), (right, 0.5)):
            text = f"move to the {named} block"
            cases.append((image, text, side))
            episodes.append(Episode(
                observations={"image": np.stack([image] * 3), "instruction": [text] * 3},
                actions=np.tile(np.float32([side, 0.25, -0.25, 0.0]), (2, 1)),
                rewards=np.zeros(2), terminations=np.array([False, True]),
                truncations=np.array([False, False]), infos={}, metadata={},
            ))  # fmt: skip
    obs_space = spaces.Dict({"image": spaces.Box(0, 255, (32, 32, 3), np.uint8),
                             "instruction": spaces.Text(max_length=40)})  # fmt: skip
    data = OfflineDataset.from_episodes(
        episodes, obs_space, spaces.Box(-1.0, 1.0, (4,), np.float32)
    )
    examples, images = rt2_sft_examples(policy, data)
    config = SFTConfig(steps=300, batch_size=12, learning_rate=2e-3, max_length=64,
                       progress=False, tensorboard=False, log_every=100)  # fmt: skip
    SFTTrainer(policy.model, policy.tokenizer, config, image_processor=policy.pixel_values).train(
        examples, out=tmp_path / "sft", images=images
    )
    policy.eval()
    films = policy.model.model.vision_tower.convnet.films
    assert all(film.proj.weight.abs().max() > 0 for film in films)
    for image, text, side in cases:
        action = policy.act({"image": image, "instruction": text})
        np.testing.assert_allclose(action, [side, 0.25, -0.25, 0.0], atol=1 / 256 + 1e-6)
    loaded = load_policy(policy.save(tmp_path / "rt2"))
    obs = {"image": cases[0][0], "instruction": cases[0][1]}
    np.testing.assert_array_equal(loaded.act(obs), policy.act(obs))


def test_the_film_tower_can_read_a_frozen_sentence_encoder(tokenizer_json, tmp_path):
    """``film_text="minilm"``: the condition is the shipped all-MiniLM-L6-v2 embedding of the
    instruction alone (the template and state marker removed from the decoded question); the
    encoder is frozen and left out of the checkpoint, and a saved policy acts the same."""
    from safetensors.torch import load_file

    from embodied_rl.policies.encoders import SentenceEncoder
    from embodied_rl.policies.rt2 import instruction_of

    assert instruction_of("In: What action should the robot take to go left? State:") == "go left"
    assert instruction_of("In: how many blocks?") == "how many blocks?"
    torch.manual_seed(0)
    policy = small_policy(tokenizer_json, **FILM, film_text="minilm").eval()
    inner = policy.model.model
    for film in inner.vision_tower.convnet.films:
        torch.nn.init.normal_(film.proj.weight, std=0.3)
    instructions = ["move to the red block", "move to the blue block"]
    ids, mask = policy.prompt_inputs(instructions)
    with torch.no_grad():
        torch.testing.assert_close(
            inner.instruction_embedding(ids, mask), SentenceEncoder()(instructions)
        )
    assert not any(p.requires_grad for p in inner.sentence_encoder.parameters())
    obs = {"image": images_of(["red"])[0].numpy(), "instruction": instructions[0]}
    path = policy.save(tmp_path / "rt2")
    saved = load_file(path / "model.safetensors")
    assert not any("sentence_encoder" in key for key in saved)
    assert any("vision_tower.convnet" in key for key in saved)
    loaded = load_policy(path)
    np.testing.assert_array_equal(loaded.act(obs), policy.act(obs))
    with pytest.raises(ValueError, match="film_text='bert'"):
        replace(policy.config, film_text="bert")
    with pytest.raises(ValueError, match="condition vision_tower='film' only"):
        RT2Config(tokenizer_json=tokenizer_json, film_text="minilm")
