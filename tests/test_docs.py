"""Every fenced ``python`` and ``bash`` block of docs/*.md, run as written with small sizes.

``PLAN`` lists each block by the start of its first line: run it (with the listed
substitutions, each of which must match, so a doc edit cannot silently restore a full-size
run) or skip it with the reason. ``test_every_block_is_planned`` fails on a block nobody
planned for. A doc's python blocks run in order in one namespace; its bash blocks run in order
through ``erl``'s ``main`` (``python -c`` lines in a subprocess). The two languages get a
directory each: they are alternatives (offline_to_online.md's Python and command-line
examples write the same output directory, which a second run refuses). Names and files a
reader is expected to have already (``data``, ``judge``, ``outputs/bc`` ...) come from the
doc's prelude below, built from tiny real runs. README.md is tests/test_readme.py's; the
``erl llm`` chain of docs/llm.md is tests/test_cli_llm.py's.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import pytest
import torch

from embodied_rl.cli import main

if TYPE_CHECKING:
    from embodied_rl.llm.demo import DemoConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"
LANGUAGES = ("python", "bash")


@dataclass(frozen=True)
class Run:
    """Run the block after replacing each doc text with the test's (all must match)."""

    small: tuple[tuple[str, str], ...] = ()
    skip_lines: Mapping[str, str] = field(default_factory=dict)  # bash: line start -> why not
    before: Callable[[], None] | None = None  # what the reader does first (in the working dir)


@dataclass(frozen=True)
class Skip:
    why: str


def label_every_pair(session: str) -> Callable[[], None]:
    """A person's clicks on the labeling page of ``session``: A, B, equal, A, ..."""

    def label() -> None:
        from embodied_rl.preference import LabelingServer

        server = LabelingServer(session, port=0)  # records as the page's POST does; never served
        try:
            for pair_id, choice in zip(server.pairs, itertools.cycle(("a", "b", "equal"))):
                server.record(pair_id, choice)
        finally:
            server.httpd.server_close()

    return label


Prelude = Callable[[Path, Path], dict[str, Any]]  # (working dir, artifacts) -> python names
D3RLPY = importlib.util.find_spec("d3rlpy") is not None
SMALL_PIPELINE = [  # every budget of the quickstart, pipeline.md's commands leave them implicit
    "collect.episodes=2", "image_size=32", "policy.overrides={n_layers: 1, feature_channels: 32}",
    "bc.steps=2", "bc.batch_size=4", "bc.checkpoint_every=2",
    "iql.steps=2", "iql.batch_size=4", "iql.checkpoint_every=2",
    "finetune.env_steps=16", "finetune.n_envs=1", "ppo.n_steps=16", "ppo.batch_size=16",
    "ppo.n_epochs=1", "finetune.value_warmup_steps=0", "transfer.episodes=1", "transfer.targets=[pybullet]",
    "transfer.sweeps={}", "transfer.video_episodes=0",
]  # fmt: skip

# doc -> {start of a block's first line: what to do}
PLAN: dict[str, dict[str, Run | Skip]] = {
    "agents.md": {
        "from embodied_rl.agents import TrainerConfig, train": Run(
            small=(
                (
                    "TrainerConfig(steps=10_000)",
                    "TrainerConfig(steps=4, batch_size=8, eval_episodes=1)",
                ),
            )
        ),
        "# stop early once the evaluation": Run(
            small=(
                (
                    "TrainerConfig(steps=100_000, eval_every=5_000)",
                    "TrainerConfig(steps=4, eval_every=2, batch_size=8, eval_episodes=1)",
                ),
            )
        ),
    },
    "policies.md": {
        "import numpy as np\nfrom embodied_rl.policies import RT2Config": Run(),
    },
    "datasets.md": {
        "from embodied_rl.datasets import collect, load_dataset": Run(
            small=(
                ("episodes=100", "episodes=2"),
                ("workers=2", "workers=1"),
                ('"image_size": 64}', '"image_size": 16, "horizon": 10}'),
            )
        ),
        "erl collect --task tabletop/pick-v0": Run(
            small=(("--episodes 100", "--episodes 2"), ("--workers 2", "--workers 1"))
        ),
        "erl datasets locomotion": Run(
            small=(
                (
                    "--bodies hopper walker2d",
                    "--bodies hopper --env-steps 4096 "
                    "--snapshot-every 2048 --eval-episodes 1 --transitions 300 --no-progress",
                ),
            )
        ),  # fmt: skip
        "import numpy as np": Run(
            small=(
                (
                    "config=LocomotionConfig()",
                    "config=LocomotionConfig(env_steps=4096, "
                    "snapshot_every=2048, eval_episodes=1, transitions=300), progress=False",
                ),
                (
                    "steps=10_000, eval_every=2_000, eval_episodes=10",
                    "steps=4, batch_size=8, eval_every=4, eval_episodes=1, progress=False",
                ),
            )
        ),  # fmt: skip
        "import d3rlpy": Run()
        if D3RLPY
        else Skip("needs d3rlpy, which stays out of the dependencies (DESIGN.md section 3)"),
    },
    "distributed.md": {
        "torchrun --nproc_per_node 2": Run(
            skip_lines={
                "torchrun": "starts processes through torchrun; tests/rl/test_distributed.py "
                "runs the same data-parallel path through torchrun",
            }
        ),
    },
    "environments.md": {
        "from embodied_rl.envs import make, make_expert, list_tasks": Skip(
            'a signature sketch: `obs_mode="state" | "rgb" | ...` lists the choices'
        ),
        'env = make("tabletop/pick-v0", backend="pybullet"': Run(),
    },
    "llm.md": {
        "import copy": Run(
            small=(
                ('prepare_demo("outputs/llm_demo")', 'prepare_demo("outputs/llm_demo", TINY_DEMO)'),
                ("iterations=60", "iterations=1, batch_size=4, minibatch_size=4, ppo_epochs=1"),
                ("prompts(4_000)", "prompts(8)"),
                ("DPOConfig(beta=0.1)", "DPOConfig(beta=0.1, steps=2, batch_size=4)"),
                ("comparisons(6_000)", "comparisons(8)"),
            )
        ),
        # the `erl llm` command chain: see OWNED_ELSEWHERE
    },
    "offline_to_online.md": {
        "from embodied_rl.agents import load_agent": Run(
            small=(
                (
                    "OnlineConfig(env_steps=20_000)",
                    "OnlineConfig(env_steps=16, batch_size=8, eval_episodes=1)",
                ),
            )
        ),
        "erl finetune online --checkpoint outputs/iql/checkpoints": Run(
            small=(("env_steps=20000", "env_steps=16"), ("env_steps=50000", "env_steps=32"))
        ),
        "from embodied_rl.agents.finetune import PPOFinetuneConfig": Run(
            small=(
                ("env_steps=50_000", "env_steps=32"),
                ("n_envs=4", "n_envs=1, eval_episodes=1"),
                ("PPOConfig(n_steps=256,", "PPOConfig(n_steps=16, batch_size=16, n_epochs=1,"),
            )
        ),
        "finetune_ppo(": Skip("the signature, with annotations: not a call"),
    },
    "pipeline.md": {
        "make demo": Run(
            small=(("bc.steps=2000", "bc.steps=2"),),
            skip_lines={
                "make demo": "the whole quickstart (about 6 min); it is the `erl pipeline` run "
                "below at full size",
            },
        ),
        "from embodied_rl.runners.pipeline import": Run(
            small=(
                (
                    '["collect.episodes=100", "bc.steps=500"]',
                    '["collect.episodes=2", "bc.steps=2", *SMALL_PIPELINE]',
                ),
            )
        ),
    },
    "ppo.md": {
        "from embodied_rl.agents.ppo import PPO": Run(
            small=(
                ("n_envs=4", "n_envs=1"),
                ("PPOConfig(n_steps=512)", "PPOConfig(n_steps=16, batch_size=16, n_epochs=1)"),
                ("learn(100_000,", "learn(16,"),
            )
        ),
    },
    "preference.md": {
        "from embodied_rl.preference import bradley_terry_loss": Run(),
        "from embodied_rl.datasets import collect, load_dataset": Run(
            small=(
                ("episodes=60", "episodes=2"),
                ('"horizon": 150}', '"horizon": 20}'),
                ("n_segments=1000, length=64", "n_segments=8, length=8"),
                ("n_pairs=5000", "n_pairs=6"),
            )
        ),
        "from embodied_rl.preference import AIFeedbackLabeler": Run(),
        "erl label --task tabletop/push-v0": Run(
            small=(
                ("--scenes 3", "--scenes 1"),
                ("--pairs 20", "--pairs 2"),
                ("--length 64", "--length 8"),
            )
        ),
        "erl label --task tabletop/reach-v0": Run(small=(("--length 32", "--length 8"),)),
        "from embodied_rl.agents import CPLConfig": Run(
            small=(
                ("scripted:pairs=2000,length=64", "scripted:pairs=4,segments=8,length=8"),
                ("bc_steps=300", "bc_steps=2"),
                (
                    "TrainerConfig(steps=1000, batch_size=8)",
                    "TrainerConfig(steps=4, batch_size=2, eval_episodes=0)",
                ),
            )
        ),
        "erl train --algo cpl --dataset": Run(
            small=(
                ("<path or id>", "tabletop/reach-mixed-v0"),
                ("scripted:pairs=2000", "scripted:pairs=4,segments=8,length=8"),
                ("bc_steps=300", "bc_steps=2"),
                ("--steps 1000", "--steps 4"),
                ("--batch-size 8", "--batch-size 2"),
            ),
            before=label_every_pair("outputs/labels"),
        ),
        "from embodied_rl.agents import train": Run(
            small=(
                ("fit_reward_model(prefs)", "fit_reward_model(prefs, SMALL_REWARD_MODEL)"),
                (
                    '"outputs/p-iql")',
                    '"outputs/p-iql", trainer_config=TrainerConfig(steps=4, batch_size=8, eval_episodes=0))',
                ),
            )
        ),
    },
    "sim_to_real.md": {
        'env = make("tabletop/pick-v0", randomization="default", seed=0)': Run(),
        "from embodied_rl.evaluation.transfer import evaluate_transfer": Run(
            small=(
                ("episodes=100", "episodes=1"),
                ("workers=2", "workers=1"),
                ("[0.2, 0.5, 1.0, 2.0]", "[0.5]"),
                ("[0, 1, 2, 3]", "[2]"),
            )
        ),
    },
}
OWNED_ELSEWHERE = {  # (doc, start of a bash block's first line): the test that runs it
    ("llm.md", "erl llm "): "tests/test_cli_llm.py",
}
ERL_DEFAULTS: dict[str, list[tuple[str, ...]]] = {  # added unless the command sets the option
    "collect": [("--horizon", "10"), ("--image-size", "16"), ("--reference-episodes", "1")],
    "train": [("--steps", "4"), ("--batch-size", "4"), ("--eval-episodes", "0")],
    # without --prepare-only `erl label` serves the labeling page until Ctrl-C
    "label": [("--scenes", "1"), ("--pairs", "2"), ("--prepare-only",)],
    "finetune online": [("batch_size=8",), ("eval_episodes=1",)],
    "finetune ppo": [
        ("n_envs=1",),
        ("eval_episodes=1",),
        ("ppo.n_steps=16",),
        ("ppo.batch_size=16",),
        ("ppo.n_epochs=1",),
    ],
    "pipeline": [(o,) for o in SMALL_PIPELINE],
    "report": [],
    "datasets locomotion": [],  # the plan gives the small sizes
}


# ---------------------------------------------------------------------- the blocks
@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # of the opening fence
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"docs/{self.doc}:{self.line}"

    def owner(self) -> str | None:
        """The other test file that runs this block, if any."""
        for (doc, start), test in OWNED_ELSEWHERE.items():
            if self.doc == doc and self.language == "bash" and self.text.startswith(start):
                return test
        return None


def fences(doc: str) -> list[Block]:
    """Every fenced block of ``docs/<doc>`` (``language`` "" for a plain fence)."""
    text = (DOCS / doc).read_text()
    return [
        Block(doc, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)
    ]


def doc_blocks(doc: str) -> list[Block]:
    """The fenced python and bash blocks of ``docs/<doc>``."""
    return [b for b in fences(doc) if b.language in LANGUAGES]


def transcripts() -> list[tuple[str, str, list[str]]]:
    """``$ erl ...`` lines of the docs' plain fences: (where, command, the output shown under it)."""
    out = []
    for doc in sorted(p.name for p in DOCS.glob("*.md")):
        for block in fences(doc):
            shown: list[str] = []
            for i, line in enumerate(block.text.splitlines(), start=block.line + 1):
                if block.language == "" and line.startswith("$ erl "):
                    shown = []
                    out.append((f"docs/{doc}:{i}", line[2:], shown))
                else:
                    shown.append(line)
    return out


TRANSCRIPTS = transcripts()


def planned(doc: str, language: str) -> list[tuple[Block, Run]]:
    """The blocks of ``doc`` in ``language`` that this file runs, in order, with their plan."""
    out = []
    for block in doc_blocks(doc):
        plan = plan_of(block)
        if block.language == language and isinstance(plan, Run):
            out.append((block, plan))
    return out


def plan_of(block: Block) -> Run | Skip | None:
    matches = [p for start, p in PLAN.get(block.doc, {}).items() if block.text.startswith(start)]
    return matches[0] if len(matches) == 1 else None


def shrink(block: Block, plan: Run) -> str:
    text = block.text
    for doc_text, test_text in plan.small:
        assert doc_text in text, f"{block.where}: {doc_text!r} is gone; update PLAN"
        text = text.replace(doc_text, test_text)
    return text


def docs_with(language: str) -> list[str]:
    return [doc for doc in PLAN if planned(doc, language)]


# ---------------------------------------------------------------------- preludes
@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """Tiny tabletop reach datasets (state, mixed tier, 16-step episodes) with 4-step BC and
    IQL runs on them, for one object and for the default four (the state's size follows the
    number of objects)."""
    from embodied_rl.agents import TrainerConfig, train
    from embodied_rl.datasets import collect, load_dataset

    root = tmp_path_factory.mktemp("artifacts")
    loop = TrainerConfig(steps=4, batch_size=8, eval_episodes=0, progress=False)
    for n_objects in (1, 4):
        where = root / f"objects{n_objects}"
        result = collect(
            "tabletop/reach-v0", "mixed", episodes=4, out=where / "datasets",
            env_kwargs={"n_objects": n_objects, "horizon": 16}, reference_episodes=1,
            progress=False,
        )  # fmt: skip
        data = load_dataset(result.path, obs_keys=["state"])
        for algo in ("bc", "iql"):
            train(algo, data, where / algo, trainer_config=loop)
    return root


def copy_runs(targets: Mapping[str, str], n_objects: int) -> Prelude:
    """A prelude copying artifacts (``dataset``, ``bc``, ``iql``: tiny runs on ``n_objects``
    objects) to the paths the doc reads."""

    def copy(ws: Path, artifacts: Path) -> dict[str, Any]:
        source = artifacts / f"objects{n_objects}"
        sources = {
            "dataset": source / "datasets" / "tabletop" / "reach-mixed-v0",
            "bc": source / "bc",
            "iql": source / "iql",
        }
        for name, target in targets.items():
            shutil.copytree(sources[name], ws / target)
        return {}

    return copy


def tiny_demo() -> DemoConfig:
    """docs/llm.md's demo pieces (tokenizer, SFT model, reward model) trained for 2 steps."""
    from embodied_rl.llm.demo import DemoConfig
    from embodied_rl.llm.reward import RewardConfig
    from embodied_rl.llm.sft import SFTConfig

    return DemoConfig(
        n_demonstrations=32, n_comparisons=16, n_eval_comparisons=8, n_normalize=8,
        sft=SFTConfig(steps=2, batch_size=8), reward=RewardConfig(steps=2, batch_size=4),
    )  # fmt: skip


def preference_names() -> dict[str, Any]:
    """The loss examples' inputs (the shapes their comments give), the AI-feedback judge and
    a 4-step reward-model config."""
    from embodied_rl.preference import RewardModelConfig

    gen = torch.Generator().manual_seed(0)
    b, k, length = 4, 3, 8
    r_chosen, r_rejected, pi_chosen, pi_rejected, ref_chosen, ref_rejected = torch.randn(
        6, b, generator=gen
    )
    return {
        "r_chosen": r_chosen, "r_rejected": r_rejected, "m": torch.rand(b, generator=gen),
        "pi_chosen": pi_chosen, "pi_rejected": pi_rejected,
        "ref_chosen": ref_chosen, "ref_rejected": ref_rejected,
        "logp_a": -torch.rand(b, length, generator=gen),
        "logp_b": -torch.rand(b, length, generator=gen),
        "labels": torch.tensor([1.0, 0.0, 0.5, 1.0]),
        "logps": -torch.rand(b, k, length, generator=gen), "scores": torch.randn(b, k, generator=gen),
        "judge": judge,
        # Meta-World's state and action sizes, as fit_reward_model would read them
        "SMALL_REWARD_MODEL": RewardModelConfig(obs_dim=39, action_dim=4, steps=4),
    }  # fmt: skip


def judge(prompt: str) -> str:
    """A stand-in for a local language-model judge: it always prefers candidate A."""
    return "Preference: A\nRationale: A ends nearer the goal."


def env_names() -> dict[str, Any]:
    from embodied_rl.envs import make

    return {"make": make}  # imported by environments.md's first block, a sketch not run here


def interrupted_pipeline(ws: Path) -> dict[str, Any]:
    """``my.yaml`` and a run of it in ``outputs/x`` stopped after its first stage."""
    (ws / "my.yaml").write_text("task: tabletop/reach-v0\nseed: 1\n")
    args = ["pipeline", "--config", "my.yaml", "--out", "outputs/x", "--stages", "collect"]
    assert main([*args, "--no-progress", *SMALL_PIPELINE]) == 0
    return {}


O2O_RUNS = {  # what offline_to_online.md reads, at the paths it reads them from
    "dataset": "outputs/datasets/examples/reach-mixed-v0", "iql": "outputs/iql", "bc": "outputs/bc",
}  # fmt: skip
PRELUDES: dict[tuple[str, str], Prelude] = {  # (doc, language) -> its prelude
    ("agents.md", "python"): copy_runs({"dataset": "datasets/tabletop/reach-mixed-v0"}, 1),
    ("environments.md", "python"): lambda ws, artifacts: env_names(),
    ("llm.md", "python"): lambda ws, artifacts: {"TINY_DEMO": tiny_demo()},
    # the Python example fine-tunes on one object, the command line on the default four
    ("offline_to_online.md", "python"): copy_runs(O2O_RUNS, 1),
    ("offline_to_online.md", "bash"): copy_runs(O2O_RUNS, 4),
    ("pipeline.md", "python"): lambda ws, artifacts: {"SMALL_PIPELINE": SMALL_PIPELINE},
    ("pipeline.md", "bash"): lambda ws, artifacts: interrupted_pipeline(ws),
    ("preference.md", "python"): lambda ws, artifacts: preference_names(),
    ("preference.md", "bash"): copy_runs(
        {"dataset": "datasets/tabletop/reach-mixed-v0", "bc": "outputs/bc"}, 4
    ),
    ("sim_to_real.md", "python"): lambda ws, artifacts: env_names(),
}


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh working directory that is also the default dataset root."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    torch.set_num_threads(1)
    return tmp_path


def prelude(doc: str, language: str, ws: Path, request) -> dict[str, Any]:
    make = PRELUDES.get((doc, language))
    if make is None:
        return {}
    return make(ws, request.getfixturevalue("artifacts"))


# ---------------------------------------------------------------------- running
def erl_args(words: list[str]) -> list[str]:
    """``erl`` arguments with the small defaults the command does not set: options after
    the subcommand, ``KEY=VALUE`` overrides at the end (after the doc's, so they stay one run
    of positionals)."""
    n = 2 if words[0] in ("finetune", "bench", "datasets") else 1
    command, rest = words[:n], words[n:]
    options, overrides = [], []
    for default in ERL_DEFAULTS[" ".join(command)]:
        key = default[0].split("=")[0]
        if any(w == key or w.startswith(f"{key}=") for w in rest):
            continue
        (overrides if "=" in default[0] else options).extend(default)
    return [*command, *options, *rest, *overrides]


def commands(block: Block, plan: Run) -> list[tuple[str, list[str] | None]]:
    """Each line of a bash block (continuations joined): (line, words to run or None)."""
    out = []
    for line in shrink(block, plan).replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        skipped = any(line.startswith(start) for start in plan.skip_lines)
        out.append((line, None if skipped or not words else words))
    return out


def split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """``VAR=value ... command`` -> ({VAR: value}, command words)."""
    n = 0
    while n < len(words) and re.fullmatch(r"[A-Z_]+=\S*", words[n]):
        n += 1
    return dict(w.partition("=")[::2] for w in words[:n]), words[n:]


def run_command(words: list[str], where: str) -> None:
    """An ``erl`` command through ``main`` (small defaults added); ``python -c`` in a
    subprocess of this interpreter."""
    env, words = split_env(words)
    if words[0] == "erl":
        args = erl_args(words[1:])
        assert main(args) == 0, f"{where}: erl {shlex.join(args)} failed"
    elif words[:2] == ["python", "-c"]:
        command = [sys.executable, *words[1:]]
        subprocess.run(command, env={**os.environ, **env}, check=True, timeout=120)
    else:
        raise AssertionError(f"{where}: no rule runs {shlex.join(words)!r}; plan it")


def close_envs(namespace: Mapping[str, Any]) -> None:
    for value in namespace.values():
        if isinstance(value, gym.Env | gym.vector.VectorEnv):
            value.close()


# ---------------------------------------------------------------------- the tests
@pytest.mark.parametrize("doc", sorted(p.name for p in DOCS.glob("*.md")))
def test_every_block_is_planned(doc):
    blocks = doc_blocks(doc)
    unplanned = [b.where for b in blocks if plan_of(b) is None and b.owner() is None]
    assert not unplanned, (
        f"add these blocks to PLAN (run with small sizes, or skip and why): {unplanned}"
    )
    for start in PLAN.get(doc, {}):
        hits = [b.where for b in blocks if b.text.startswith(start)]
        assert len(hits) == 1, f"PLAN[{doc!r}][{start!r}] matches {hits}, not one block"
    for block, plan in planned(doc, "python") + planned(doc, "bash"):
        shrink(block, plan)  # every substitution still matches
    for block, plan in planned(doc, "bash"):
        for line, words in commands(block, plan):
            command = split_env(words)[1][:2] if words else None
            if command and command[0] != "erl" and command != ["python", "-c"]:
                raise AssertionError(f"{block.where}: {line!r} is neither run nor skipped")


@pytest.mark.parametrize("doc", docs_with("python"))
def test_python_blocks_run(doc, workdir, request):
    namespace = {"__name__": f"docs.{doc}", **prelude(doc, "python", workdir, request)}
    try:
        for block, plan in planned(doc, "python"):
            if plan.before:
                plan.before()
            code = compile("\n" * block.line + shrink(block, plan), f"docs/{doc}", "exec")
            try:
                exec(code, namespace)
            except Exception as error:
                raise AssertionError(f"{block.where} raised {error!r}") from error
    finally:
        close_envs(namespace)


@pytest.mark.parametrize("doc", docs_with("bash"))
def test_bash_blocks_run(doc, workdir, request):
    prelude(doc, "bash", workdir, request)
    for block, plan in planned(doc, "bash"):
        if plan.before:
            plan.before()
        for _, words in commands(block, plan):
            if words:
                run_command(words, block.where)


@pytest.mark.parametrize(
    ("where", "command", "shown"), TRANSCRIPTS, ids=[t[0] for t in TRANSCRIPTS]
)
def test_transcripts_show_what_erl_prints(where, command, shown, workdir, capsys, monkeypatch):
    """The transcripts show configuration errors, raised before anything runs (should a
    pipeline transcript's config be accepted, the test stops instead of running it)."""
    import embodied_rl.runners.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError(f"{where}: erl accepted {command!r} and would run the pipeline")

    monkeypatch.setattr(embodied_rl.runners.pipeline, "run_pipeline", refuse)
    assert main(shlex.split(command)[1:]) == 2, where
    captured = capsys.readouterr()
    printed = (captured.out + captured.err).splitlines()
    patterns = [re.escape(line).replace(re.escape("..."), ".*") for line in shown]
    assert len(printed) == len(patterns), f"{where}: erl printed {printed}"
    for pattern, line in zip(patterns, printed, strict=True):
        assert re.fullmatch(pattern, line), f"{where}: erl printed {line!r}"
