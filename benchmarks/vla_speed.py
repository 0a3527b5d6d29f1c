"""VLA policy speed on CPU: inference latency at batch 1 (tiny, with and without the
frame-token cache; rt1 for reference) and BC training throughput of the tiny config.

Issue #6 target: tiny inference >= 100 Hz at batch 1 on one core (RT-1 ran at 3 Hz).

    python benchmarks/vla_speed.py --out benchmarks/results/vla_speed.md
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from embodied_rl.agents.losses import behavior_loss
from embodied_rl.policies import VLAPolicy, vla_preset

PARTS = {  # module name prefixes of each part of the VLA
    "instruction encoder (frozen MiniLM)": ("text_encoder.",),
    "image encoder with FiLM": ("image_encoder.",),
    "TokenLearner and token projection": ("token_learner.", "token_proj."),
    "proprio token": ("proprio_norm.", "proprio_proj."),
    "transformer": ("transformer.", "position"),
    "action and value heads": ("head.", "value_head."),
}


def parameters_by_part(policy: VLAPolicy) -> dict[str, int]:
    """Parameter counts per part (buffers excluded)."""
    counts = dict.fromkeys(PARTS, 0)
    for name, p in policy.named_parameters():
        part = next(k for k, prefixes in PARTS.items() if name.startswith(prefixes))
        counts[part] += p.numel()
    return counts


def observation(policy: VLAPolicy, image: np.ndarray) -> dict:
    obs = {"image": image, "instruction": "pick up the red block"}
    if policy.config.proprio_dim:
        obs["proprio"] = np.zeros(policy.config.proprio_dim, np.float32)
    return obs


def act_hz(policy: VLAPolicy, n: int, cached: bool) -> float:
    size = policy.config.image_size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(n + 5, size, size, 3), dtype=np.uint8)
    policy.reset()
    for f in frames[:5]:  # warm-up, fills part of the history
        policy.act(observation(policy, f))
    start = time.perf_counter()
    if cached:
        for f in frames[5:]:
            policy.act(observation(policy, f))
    else:  # what a policy without the cache does: re-encode the whole window every step
        history = policy.config.history
        with torch.no_grad():
            for i in range(5, n + 5):
                window = torch.as_tensor(frames[max(0, i - history + 1) : i + 1])[None]
                inputs = {"images": window, "instructions": ["pick up the red block"]}
                if policy.config.proprio_dim:
                    inputs["proprio"] = torch.zeros(1, len(window[0]), policy.config.proprio_dim)
                out = policy(inputs)
                policy.head.mode(out[0, -1])
    return n / (time.perf_counter() - start)


def train_samples_per_s(policy: VLAPolicy, batch_size: int, steps: int) -> float:
    c = policy.config
    g = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.randint(
            0,
            256,
            (batch_size, c.history, c.image_size, c.image_size, 3),
            dtype=torch.uint8,
            generator=g,
        ),
        "instructions": ["pick up the red block", "stack the blue block on the red block"]
        * (batch_size // 2),
    }
    if c.proprio_dim:
        batch["proprio"] = torch.randn(batch_size, c.history, c.proprio_dim, generator=g)
    actions = torch.rand(batch_size, c.history, len(c.action_low), generator=g) * 2 - 1
    optimiser = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
    policy.train()

    def step() -> None:
        loss, _ = behavior_loss(policy.head, policy(batch), actions)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    policy.eval()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="act() calls per measurement")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    tiny, rt1 = VLAPolicy(vla_preset("tiny")).eval(), VLAPolicy(vla_preset("rt1")).eval()
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        cached = act_hz(tiny, args.n, cached=True)
        uncached = act_hz(tiny, args.n // 3, cached=False)
        rows.append(
            (
                f"tiny act(), batch 1, {threads} thread(s), frame-token cache",
                f"{cached:,.0f} Hz",
                f"{cached / uncached:.1f}x vs re-encoding",
            )
        )
        rows.append(
            (
                f"tiny, re-encoding all {tiny.config.history} frames, {threads} thread(s)",
                f"{uncached:,.0f} Hz",
                "",
            )
        )
        rows.append(
            (
                f"rt1 act() (300x300, EfficientNet-B3), {threads} thread(s)",
                f"{act_hz(rt1, 10, cached=True):,.1f} Hz",
                "",
            )
        )
        rate = train_samples_per_s(tiny, args.batch_size, args.train_steps)
        rows.append(
            (
                f"tiny BC training, batch {args.batch_size} x {tiny.config.history} frames, {threads} thread(s)",
                f"{rate:,.0f} windows/s",
                f"{rate * tiny.config.history:,.0f} frames/s",
            )
        )
    count = lambda p: sum(v.numel() for v in p.state_dict().values())  # noqa: E731
    trainable = lambda p: sum(v.numel() for v in p.trainable_state_dict().values())  # noqa: E731
    lines = [
        f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}",
        "",
        f"Parameters: tiny {count(tiny) / 1e6:.1f}M ({trainable(tiny) / 1e6:.2f}M trained, the rest the frozen MiniLM), "
        f"rt1 {count(rt1) / 1e6:.1f}M ({trainable(rt1) / 1e6:.1f}M trained)",
        "",
        "| measurement | rate | note |",
        "|---|---:|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
        "Parameters per part (RT-1 reports 35M without its Universal Sentence Encoder; its",
        "decoder's feed-forward is one 512x512 layer, ours two, hence 21.0M instead of 18.9M):",
        "",
        "| part | tiny | rt1 |",
        "|---|---:|---:|",
    ]
    parts = {name: parameters_by_part(p) for name, p in (("tiny", tiny), ("rt1", rt1))}
    for part in PARTS:
        lines.append(
            f"| {part} | {parts['tiny'][part] / 1e6:.2f}M | {parts['rt1'][part] / 1e6:.2f}M |"
        )
    without_text = {
        name: sum(v for k, v in counts.items() if not k.startswith("instruction"))
        for name, counts in parts.items()
    }
    lines.append(
        f"| all but the instruction encoder | {without_text['tiny'] / 1e6:.2f}M | "
        f"{without_text['rt1'] / 1e6:.2f}M |"
    )
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(
                f"Command: `python benchmarks/vla_speed.py --n {args.n} --train-steps {args.train_steps} --batch-size {args.batch_size} --out {args.out}`\n\n{text}\n"
            )


if __name__ == "__main__":
    main()
