"""The RT-2-style policy beside the RT-1-style one: success on held-out tabletop scenes, seen
and unseen instructions, for behaviour cloning on robot data only and for RT-2's
co-fine-tuning on robot data mixed with scene questions; plus each policy's answers to
held-out scene questions and its inference rate.

Rows (``--variants``): ``rt1-tiny`` (the tiny RT-1-style VLA preset of
``benchmarks/vla_learning.py``, BC through the offline trainer), ``rt2-tiny`` (the tiny
RT-2-style policy, BC as supervised fine-tuning with the LLM trainers' ``SFTTrainer``, images
shifted at random by up to ``--rt2-shift`` pixels as the RT-1 row's are; ``rt2-tiny-noshift``
without the shift; ``rt2-tiny-conv`` with early convolutions in place of the ViT's
patchify, ``RT2Config(vision_stem="conv")``; ``rt2-tiny-hlgauss`` trained against HL-Gauss
targets of ``--rt2-sigma`` bin widths on the action tokens, ``llm.sft.OrdinalBins``, and
acting with the expected bin, ``RT2Config(decoding="mean")``; ``rt2-tiny-late-image`` with
the image tokens after the question, ``RT2Config(image_position="after_text")``;
``rt2-tiny-state`` with the end effector's position and the gripper opening as four state
tokens after the question, binned over the data's range, ``RT2Config(state_key="proprio")``,
the entries the RT-1 row reads; ``rt2-tiny-oracle-state``, a diagnostic, with the end
effector's position and the target's position relative to it from the simulator's state
vector, so that the images are not needed; ``rt2-tiny-objects-state`` with every object's
position instead, so that the image must say which one the instruction names;
``rt2-tiny-film`` with the RT-1 row's image path as the vision tower, a FiLM ConvNet that
the question's pooled token embeddings modulate, coordinates and TokenLearner's 8 tokens,
``RT2Config(vision_tower="film")`` (``policies.instructed_llava``), the image after the
question; ``rt2-tiny-film-state`` the same with the ``-state`` row's proprioception tokens;
``rt2-tiny-film-minilm`` with the RT-1 row's frozen MiniLM sentence embedding of the
instruction as the FiLM condition instead, ``RT2Config(film_text="minilm")``) and
``rt2-tiny+cotrain`` (the same, every batch drawn from the robot examples and
``--qa-scenes`` x ``--qa-per-scene`` scene questions together; ``rt2-tiny-hlgauss+cotrain`` and
``rt2-tiny-late-image+cotrain``
the same with HL-Gauss or the late image) and ``rt2-tiny+ppo`` (the
``rt2-tiny`` policy after its SFT, then ``--ppo-iterations`` rollouts of ``--ppo-steps``
environment steps of PPO with the environment's ``--ppo-reward`` and the KL to the SFT
policy: ``llm.RT2PPOTrainer``, on training scenes of the seen split) and ``rt2-tiny+dpo``
(the same SFT policy, then DPO on its own trajectories: ``--dpo-episodes`` sampled rollouts
on training scenes of the seen split, ``--dpo-pairs`` random pairs of ``--dpo-segment``-step
segments labelled by B-Pref's oracle teacher on the dense reward, ``--dpo-steps`` DPO steps
against the frozen SFT policy; ``llm.rt2.rt2_segment_pairs`` + ``DPOTrainer``);
``rt2-tiny-film+cotrain``, ``+ppo`` and ``+dpo`` (and ``rt2-tiny-film-minilm+...``) are the
same three on the ``rt2-tiny-film`` (``-minilm``) recipe (``X+ppo`` and ``X+dpo`` start from
run ``X``). Demonstrations, held-out
scenes (reset seeds from 1,000,000) and Wilson intervals are ``vla_learning.py``'s; the scene
questions come from reset seeds 2,000,000 on (training) and 3,000,000 on (held out), apart
from every robot episode. Inference: ``act`` at batch 1 on one thread, after a warm-up.

    python benchmarks/rt2_learning.py --out benchmarks/results/rt2_learning.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vla_learning  # noqa: E402  (the sibling benchmark: datasets, rollouts, the RT-1 row)

RT1 = "8px+shift+proprio+gaussian"  # vla_learning's tiny preset
VARIANTS = (
    "rt1-tiny", "rt2-tiny", "rt2-tiny-noshift", "rt2-tiny-conv", "rt2-tiny-hlgauss",
    "rt2-tiny-late-image", "rt2-tiny-late-image+cotrain", "rt2-tiny-state",
    "rt2-tiny-oracle-state", "rt2-tiny-objects-state", "rt2-tiny-film", "rt2-tiny-film-state",
    "rt2-tiny-film-minilm",
    "rt2-tiny+cotrain", "rt2-tiny-hlgauss+cotrain",
    "rt2-tiny+ppo", "rt2-tiny+dpo", "rt2-tiny-film+cotrain", "rt2-tiny-film+ppo",
    "rt2-tiny-film+dpo", "rt2-tiny-film-minilm+cotrain", "rt2-tiny-film-minilm+ppo",
    "rt2-tiny-film-minilm+dpo",
)  # fmt: skip
PPO_SEED = 4_000_000  # the PPO environment's first reset: apart from demos and held-out scenes
DPO_SEED = 5_000_000  # the DPO rollouts' resets: apart from every other episode
QA_SEED, QA_HELD_OUT_SEED = 2_000_000, 3_000_000


def scene_questions(args, scenes: int, seed: int):
    """Images and questions of ``scenes`` fresh scenes of ``--task`` (cached as .npz)."""
    from embodied_rl.envs import make
    from embodied_rl.envs.tabletop.questions import SceneQuestion, collect_scene_questions

    path = Path(args.work) / "data" / f"questions-{scenes}x{args.qa_per_scene}-s{seed}.npz"
    if path.exists():
        saved = np.load(path, allow_pickle=False)
        questions = [SceneQuestion(str(q), str(a), str(k)) for q, a, k in saved["qa"]]
        return saved["images"], questions
    images, questions = collect_scene_questions(
        lambda: make(args.task, obs_mode="rgb", image_size=vla_learning.IMAGE_SIZE,
                     randomization=args.randomization),
        scenes, per_scene=args.qa_per_scene, seed=seed,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    qa = np.array([(q.question, q.answer, q.kind) for q in questions])
    np.savez(path, images=images, qa=qa)
    return images, questions


def rt2_policy(data, questions, seed: int, shift: int, stem: str = "patch", **options):
    from embodied_rl.agents.trainer import seed_everything
    from embodied_rl.policies import RT2Config, RT2Policy, rt2_tokenizer
    from embodied_rl.policies.rt2 import QUESTION_PROMPT

    seed_everything(seed)
    instructions = sorted({str(i) for i in data.observations["instruction"]})
    texts = [QUESTION_PROMPT.format(question=q.question) + " " + q.answer for q in questions]
    tokenizer = rt2_tokenizer(instructions, texts=texts)
    space = data.action_space
    config = RT2Config(
        tokenizer_json=tokenizer.backend_tokenizer.to_str(), image_size=vla_learning.IMAGE_SIZE,
        action_low=tuple(float(x) for x in space.low),
        action_high=tuple(float(x) for x in space.high), seed=seed, random_shift=shift,
        vision_stem=stem, **options,
    )  # fmt: skip
    return RT2Policy(config)


def vqa_accuracy(policy, images: np.ndarray, questions) -> dict[str, Any]:
    """Exact-match accuracy of greedy answers, overall and per question kind."""
    from embodied_rl.evaluation.transfer import wilson_interval

    answers = []
    for start in range(0, len(questions), 64):
        chunk = questions[start : start + 64]
        answers += policy.answer(
            torch.as_tensor(images[start : start + 64]), [q.question for q in chunk]
        )
    right = [a == q.answer for a, q in zip(answers, questions, strict=True)]
    kinds = sorted({q.kind for q in questions})
    per_kind = {
        k: float(np.mean([r for r, q in zip(right, questions, strict=True) if q.kind == k]))
        for k in kinds
    }
    return {"correct": int(sum(right)), "n": len(right),
            "interval": wilson_interval(int(sum(right)), len(right)), "per_kind": per_kind}  # fmt: skip


def inference_hz(policy, data, n: int = 50) -> float:
    """``act`` calls per second at batch 1 (one observation of the data), after 5 warm-ups."""
    row = int(data.obs_index[0])
    obs = {k: v[row] for k, v in data.observations.items()}
    obs["instruction"] = str(obs["instruction"])
    policy.eval()
    for _ in range(5):
        policy.reset()
        policy.act(obs)
    start = time.perf_counter()
    for _ in range(n):
        policy.reset()
        policy.act(obs)
    return n / (time.perf_counter() - start)


def rt2_curve(args, variant: str, seed: int, data, qa, held_out_qa) -> list[dict[str, Any]]:
    """SFT of the RT-2-style policy in chunks of ``--eval-every`` steps; one row per chunk."""
    from embodied_rl.llm.sft import OrdinalBins, SFTConfig, SFTTrainer
    from embodied_rl.policies import load_policy, rt2_state_range
    from embodied_rl.policies.rt2 import rt2_sft_examples

    out = Path(args.work) / "runs" / f"{variant}-s{seed}"
    record = out / "curve.json"
    rows = json.loads(record.read_text()) if record.exists() else []
    if args.table_only or (rows and rows[-1]["step"] >= args.steps):
        return rows
    qa_images, questions = qa
    shift = 0 if variant.endswith("-noshift") else args.rt2_shift
    stem = "conv" if variant.endswith("-conv") else "patch"
    hl_gauss = "-hlgauss" in variant
    base = variant.removesuffix("+cotrain")
    options = {}  # RT2Config fields of the variant
    if base.endswith("-oracle-state"):  # ee position and the target relative to it
        d = data.observations["state"].shape[-1]
        options = rt2_state_range(data, "state", (0, 1, 2, d - 6, d - 5, d - 4))
    elif base.endswith("-objects-state"):  # ee and every object's position, not which
        from embodied_rl.envs.tabletop.scene import COLORS, SHAPES

        per_object = 7 + len(COLORS) + len(SHAPES)  # position, quaternion, one-hots
        d = data.observations["state"].shape[-1]
        n = (d - 7 - 6 - 3 - 6 - 6) // (per_object + 2)  # TabletopEnv.state_dim, 6 families
        objects = [7 + per_object * i + k for i in range(n) for k in range(3)]
        options = rt2_state_range(data, "state", (0, 1, 2, *objects))
    elif base.endswith("-state"):
        options = rt2_state_range(data, "proprio", vla_learning.PROPRIO["proprio_indices"])
    film = "-film" in variant
    if film:  # RT-1's FiLM ConvNet (vla_learning's tiny preset) as the vision tower
        from embodied_rl.policies.vla import vla_preset

        preset = vla_preset("tiny")
        options |= {"vision_tower": "film", "film_channels": preset.convnet_channels,
                  "film_strides": preset.convnet_strides,
                  "vision_tokens": preset.tokens_per_frame,
                  "film_text": "minilm" if "-minilm" in variant else "tokens"}  # fmt: skip
    policy = rt2_policy(
        data, questions, seed, shift, stem, decoding="mean" if hl_gauss else "argmax",
        image_position="after_text" if "-late-image" in variant or film else "first", **options,
    )  # fmt: skip
    examples, images = rt2_sft_examples(policy, data, labels=args.labels)
    if variant.endswith("+cotrain"):
        examples += [(policy.question_prompt(q.question), " " + q.answer) for q in questions]
        images = np.concatenate([images, qa_images])
    # rows are written only at the end of a chunk: a rerun restarts an unfinished run
    rows, seconds = [], 0.0
    config = SFTConfig(
        steps=args.eval_every, batch_size=args.batch_size, learning_rate=args.rt2_lr,
        warmup_steps=min(200, args.eval_every), max_length=policy.n_image_tokens + 64,
        seed=seed, progress=not args.no_progress, tensorboard=False, log_every=100,
    )  # fmt: skip
    ordinal = (
        OrdinalBins(policy.first_action_id, policy.config.n_bins, args.rt2_sigma)
        if hl_gauss
        else None
    )
    trainer = SFTTrainer(
        policy.model, policy.tokenizer, config, image_processor=policy.train_pixel_values,
        ordinal=ordinal,
    )  # fmt: skip
    for steps in range(args.eval_every, args.steps + 1, args.eval_every):
        started = time.perf_counter()
        trainer.train(examples, out=out / "sft", images=images)
        seconds += time.perf_counter() - started
        policy.save(out / "policy")
        row = {
            "variant": variant, "seed": seed, "step": steps, "train_s": round(seconds, 1),
            **{split: vla_learning.rollouts(args, policy, split) for split in ("seen", "unseen")},
            "vqa": vqa_accuracy(policy, *held_out_qa),
        }  # fmt: skip
        print(json.dumps({k: row[k] for k in ("variant", "step", "train_s")}),
              {s: row[s]["success"] for s in ("seen", "unseen")}, flush=True)  # fmt: skip
        rows.append(row)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(rows, indent=1))
    rows[-1]["hz"] = inference_hz(load_policy(out / "policy"), data)
    record.write_text(json.dumps(rows, indent=1))
    return rows


def mean_finite(values: list[float]) -> float | None:
    """The mean of the finite values (rollouts in which an episode ended), None if none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def fine_tune_run(args, variant: str, seed: int, sft_rows, last_step: int):
    """``(out, cached rows, SFT policy directory)`` of a run that fine-tunes the finished SFT
    run its name starts with (``rt2-tiny`` for ``rt2-tiny+ppo``); the directory is None when
    the cached rows are all that is asked for."""
    out = Path(args.work) / "runs" / f"{variant}-s{seed}"
    record = out / "curve.json"
    rows = json.loads(record.read_text()) if record.exists() else []
    if args.table_only or (rows and rows[-1]["step"] >= last_step):
        return out, rows, None
    base = variant.rsplit("+", 1)[0]
    sft = Path(args.work) / "runs" / f"{base}-s{seed}" / "policy"
    if not sft_rows or sft_rows[-1]["step"] < args.steps or not sft.is_dir():
        raise SystemExit(f"{variant} starts from the finished {base} run ({sft}): run it first")
    return out, rows, sft


def ppo_curve(args, variant: str, seed: int, sft_rows: list[dict[str, Any]]) -> list[dict]:
    """PPO with the environment's reward from the SFT run's final policy (``rt2-tiny`` for
    ``rt2-tiny+ppo``), in chunks of ``--ppo-eval-every`` rollouts; the first row is the SFT
    policy's (step 0)."""
    from embodied_rl.envs import make
    from embodied_rl.llm import PPORLHFConfig, RT2PPOConfig, RT2PPOTrainer
    from embodied_rl.policies import load_policy

    out, rows, sft = fine_tune_run(args, variant, seed, sft_rows, args.ppo_iterations)
    if sft is None:
        return rows
    record = out / "curve.json"
    policy = load_policy(sft)
    env = make(args.task, split="seen", randomization=args.randomization,
               reward_type=args.ppo_reward, **policy.env_options())  # fmt: skip
    config = RT2PPOConfig(
        ppo=PPORLHFConfig(
            iterations=args.ppo_eval_every, batch_size=args.ppo_steps, minibatch_size=32,
            ppo_epochs=2, learning_rate=args.ppo_lr, kl_coef=args.ppo_kl, seed=PPO_SEED + seed,
            progress=not args.no_progress, tensorboard=False,
        )
    )  # fmt: skip
    trainer = RT2PPOTrainer(policy, env, config)
    rows = [{**sft_rows[-1], "variant": variant, "step": 0, "train_s": 0.0}]
    rows[0].pop("hz", None)
    seconds = 0.0
    for steps in range(args.ppo_eval_every, args.ppo_iterations + 1, args.ppo_eval_every):
        started = time.perf_counter()
        logged = trainer.train(out=out / "ppo")
        seconds += time.perf_counter() - started
        trainer.save(out / "policy")
        row = {
            "variant": variant, "seed": seed, "step": steps, "train_s": round(seconds, 1),
            "train_success": mean_finite([r.get("train/success", np.nan) for r in logged]),
            "kl": logged[-1]["train/kl"],
            **{split: vla_learning.rollouts(args, policy, split) for split in ("seen", "unseen")},
        }  # fmt: skip
        print(json.dumps({k: row[k] for k in ("variant", "step", "train_s", "kl")}),
              {s: row[s]["success"] for s in ("seen", "unseen")}, flush=True)  # fmt: skip
        rows.append(row)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(rows, indent=1))
    env.close()
    return rows


class _Sampled:
    """A policy acting with sampled actions (the DPO rollouts' behaviour)."""

    def __init__(self, policy) -> None:
        self.policy = policy

    def reset(self) -> None:
        self.policy.reset()

    def act(self, obs):
        return self.policy.act(obs, deterministic=False)


def dpo_curve(args, variant: str, seed: int, sft_rows: list[dict[str, Any]]) -> list[dict]:
    """DPO from the SFT run's final policy (``rt2-tiny`` for ``rt2-tiny+dpo``) on preferences
    over its own rollouts, in chunks of ``--dpo-eval-every`` steps; the first row is the SFT
    policy's (step 0)."""
    from embodied_rl.datasets import collect, dataset_dir, load_dataset
    from embodied_rl.llm.dpo import DPOConfig, DPOTrainer
    from embodied_rl.llm.rt2 import rt2_segment_pairs
    from embodied_rl.policies import load_policy
    from embodied_rl.preference.data import random_pairs, sample_segments
    from embodied_rl.preference.labelers import ScriptedTeacher, TeacherConfig

    out, rows, sft = fine_tune_run(args, variant, seed, sft_rows, args.dpo_steps)
    if sft is None:
        return rows
    record = out / "curve.json"
    policy = load_policy(sft)
    policy.eval()
    root = out / "data"
    dataset_id = f"rt2-learning/rollouts-s{seed}-{args.dpo_episodes}-v0"
    if not dataset_dir(root, dataset_id).exists():
        torch.manual_seed(DPO_SEED + seed)  # the sampled actions
        collect(
            args.task, _Sampled(policy), episodes=args.dpo_episodes, out=root,
            dataset_id=dataset_id, seed=DPO_SEED + 1000 * seed, randomization=args.randomization,
            env_kwargs={"obs_mode": "rgb+state", "image_size": vla_learning.IMAGE_SIZE,
                        "split": "seen", "reward_type": "dense"},
            reference_episodes=0, progress=not args.no_progress,
        )  # fmt: skip
    rollouts = load_dataset(dataset_dir(root, dataset_id))
    segments = sample_segments(rollouts, args.dpo_pairs, args.dpo_segment, seed=seed)
    first, second = random_pairs(len(segments), args.dpo_pairs, seed=seed)
    preferences = ScriptedTeacher(TeacherConfig(seed=seed)).label_pairs(segments, first, second)
    pairs, images = rt2_segment_pairs(policy, preferences)
    config = DPOConfig(
        steps=args.dpo_eval_every, batch_size=16, learning_rate=args.dpo_lr, beta=args.dpo_beta,
        max_length=policy.n_image_tokens + 64, seed=seed, progress=not args.no_progress,
        tensorboard=False, log_every=50,
    )  # fmt: skip
    policy.train()
    trainer = DPOTrainer(
        policy.model, policy.tokenizer, config, image_processor=policy.pixel_values
    )
    prepared = trainer.prepare(pairs, images=images)
    successes = int(rollouts.terminations.sum())  # tabletop episodes terminate on success
    rows = [{**sft_rows[-1], "variant": variant, "step": 0, "train_s": 0.0,
             "pairs": len(pairs), "rollouts": rollouts.n_episodes,
             "rollout_successes": successes}]  # fmt: skip
    rows[0].pop("hz", None)
    seconds = 0.0
    for steps in range(args.dpo_eval_every, args.dpo_steps + 1, args.dpo_eval_every):
        started = time.perf_counter()
        logged = trainer.train(prepared, out=out / "dpo")
        seconds += time.perf_counter() - started
        policy.save(out / "policy")
        row = {
            "variant": variant, "seed": seed, "step": steps, "train_s": round(seconds, 1),
            "dpo_accuracy": logged[-1].get("train/reward_accuracy"),
            **{split: vla_learning.rollouts(args, policy, split) for split in ("seen", "unseen")},
        }  # fmt: skip
        print(json.dumps({k: row[k] for k in ("variant", "step", "train_s")}),
              {s: row[s]["success"] for s in ("seen", "unseen")}, flush=True)  # fmt: skip
        rows.append(row)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(rows, indent=1))
    return rows


def rt1_curve(args, seed: int, data, held_out) -> list[dict[str, Any]]:
    from embodied_rl.policies import load_policy

    rows = vla_learning.curve(args, RT1, seed, data, held_out)
    if rows and "hz" not in rows[-1] and not args.table_only:
        run = Path(args.work) / "runs" / f"{RT1}-s{seed}{vla_learning.run_suffix(args)}"
        rows[-1]["hz"] = inference_hz(load_policy(run), data)
        (run / "curve.json").write_text(json.dumps(rows, indent=1))
    return rows


def report(args, results: dict[tuple[str, int], list[dict[str, Any]]], minutes: float) -> str:
    rate = vla_learning.rate
    lines = [
        f"# RT-2-style vs RT-1-style tiny VLAs on {args.task}",
        "",
        f"`python benchmarks/rt2_learning.py {' '.join(args.argv)}`".replace("  ", " "),
        "",
        f"Randomization `{args.randomization}`, {args.episodes} expert demonstrations, "
        f"{args.steps} steps of batch {args.batch_size} (RT-1: Adam {args.lr:g}; RT-2: AdamW "
        f"{args.rt2_lr:g}, 200 warm-up steps), one torch thread. Success on "
        f"{args.eval_episodes} held-out scenes per split, 95% Wilson intervals; scene questions: "
        f"{args.qa_scenes} x {args.qa_per_scene} for co-fine-tuning, "
        f"{args.qa_held_out} x {args.qa_per_scene} held out.",
        "",
        "| variant | seed | step | train s | seen | unseen | scene questions (held out) "
        "| act Hz (batch 1, 1 thread) |",
        "|---|---:|---:|---:|---|---|---|---:|",
    ]
    for (variant, seed), rows in results.items():
        for r in rows:
            vqa = (
                f"{r['vqa']['correct'] / r['vqa']['n']:.0%} [{r['vqa']['interval'][0]:.0%}, "
                f"{r['vqa']['interval'][1]:.0%}]"
                if "vqa" in r
                else "-"
            )
            hz = f"{r['hz']:.0f}" if "hz" in r else ""
            lines.append(
                f"| {variant} | {seed} | {r['step']} | {r['train_s']:.0f} | {rate(r['seen'])} | "
                f"{rate(r['unseen'])} | {vqa} | {hz} |"
            )
    kinds = [
        (variant, r["vqa"]["per_kind"])
        for (variant, _), rows in results.items()
        for r in rows[-1:]
        if "vqa" in r
    ]
    if kinds:
        names = sorted({k for _, per in kinds for k in per})
        lines += ["", "Scene-question accuracy per kind (last step):", "",
                  "| variant | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]  # fmt: skip
        for variant, per in kinds:
            lines.append(
                f"| {variant} | " + " | ".join(f"{per.get(k, 0):.0%}" for k in names) + " |"
            )
    for (variant, seed), rows in results.items():
        if variant.endswith("+dpo") and rows:
            first = rows[0]
            accuracy = ", ".join(
                f"{r['dpo_accuracy']:.0%} at step {r['step']}"
                for r in rows[1:]
                if r.get("dpo_accuracy") is not None
            )
            lines += ["", f"{variant} seed {seed}: {first['pairs']} decided pairs of "
                      f"{args.dpo_segment}-step segments from {first['rollouts']} sampled "
                      f"rollouts of the SFT policy ({first['rollout_successes']} succeeded); "
                      f"DPO's implicit-reward accuracy on its training pairs {accuracy}."]  # fmt: skip
    lines += ["", f"Wall time of this invocation {minutes:.0f} min (finished runs are cached)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    vla_learning.add_arguments(parser, "outputs/bench/rt2_learning", 6000)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--eval-every", type=int, default=1500)
    parser.add_argument("--rt2-lr", type=float, default=1e-3)
    parser.add_argument(
        "--rt2-shift", type=int, default=4,
        help="DrQ random shift (pixels) of the RT-2 SFT images; rt2-tiny-noshift uses 0",
    )  # fmt: skip
    parser.add_argument(
        "--rt2-sigma", type=float, default=4.0,
        help="HL-Gauss width in bin widths for the -hlgauss variants (256 bins over [-1, 1]: "
        "4 bins = 0.031)",
    )  # fmt: skip
    parser.add_argument("--qa-scenes", type=int, default=500)
    parser.add_argument("--qa-held-out", type=int, default=100)
    parser.add_argument("--qa-per-scene", type=int, default=4)
    parser.add_argument("--ppo-iterations", type=int, default=60, help="PPO rollouts")
    parser.add_argument("--ppo-eval-every", type=int, default=20)
    parser.add_argument("--ppo-steps", type=int, default=128, help="environment steps a rollout")
    parser.add_argument("--ppo-lr", type=float, default=1e-4)
    parser.add_argument("--ppo-kl", type=float, default=0.05, help="beta of the KL to SFT")
    parser.add_argument("--ppo-reward", default="dense", choices=("sparse", "dense"))
    parser.add_argument("--dpo-episodes", type=int, default=200, help="rollouts to label")
    parser.add_argument("--dpo-pairs", type=int, default=1000)
    parser.add_argument("--dpo-segment", type=int, default=8, help="steps per segment")
    parser.add_argument("--dpo-steps", type=int, default=300)
    parser.add_argument("--dpo-eval-every", type=int, default=150)
    parser.add_argument("--dpo-lr", type=float, default=1e-4)
    parser.add_argument("--dpo-beta", type=float, default=0.1)
    args = parser.parse_args()
    from embodied_rl.utils.io import write_text_atomic

    args.argv = sys.argv[1:]
    torch.set_num_threads(1)
    started = time.perf_counter()
    data, held_out = vla_learning.training_data(args)
    qa = scene_questions(args, args.qa_scenes, QA_SEED)
    held_out_qa = scene_questions(args, args.qa_held_out, QA_HELD_OUT_SEED)
    results = {}
    for variant in args.variants:
        for seed in args.seeds:
            if variant == "rt1-tiny":
                results[(variant, seed)] = rt1_curve(args, seed, data, held_out)
            elif variant.endswith(("+ppo", "+dpo")):
                base = variant.rsplit("+", 1)[0]
                sft_rows = results.get((base, seed)) or rt2_curve(
                    args, base, seed, data, qa, held_out_qa
                )
                fine_tune = ppo_curve if variant.endswith("+ppo") else dpo_curve
                results[(variant, seed)] = fine_tune(args, variant, seed, sft_rows)
            else:
                results[(variant, seed)] = rt2_curve(args, variant, seed, data, qa, held_out_qa)
    text = report(args, results, (time.perf_counter() - started) / 60)
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
