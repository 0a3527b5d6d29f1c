"""What the LLM benchmarks share: options, the cached demo (tokenizer, SFT policy, reward
model) and Markdown helpers. Not a benchmark itself."""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import torch

from embodied_rl.llm.demo import Demo, DemoConfig, prepare_demo

DEFAULT_WORK = "outputs/llm_bench"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--work", default=DEFAULT_WORK, help="cache of the demo models and run logs")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="Markdown report (a PNG is written beside it)")
    p.add_argument("--no-progress", action="store_true")
    return p


def setup(args: argparse.Namespace) -> tuple[Demo, float]:
    """One torch thread, the cached demo; returns it and the seconds it took."""
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    demo = prepare_demo(
        os.path.join(args.work, "demo"), DemoConfig(seed=args.seed), progress=not args.no_progress
    )
    return demo, time.perf_counter() - start


def machine_note() -> str:
    """Load average and cores when the results were written (the CPU is shared)."""
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return f"Machine when written: `{load}`; {os.cpu_count()} cores, torch threads 1."


def table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; floats with 3 significant decimals."""

    def cell(x: object) -> str:
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)
