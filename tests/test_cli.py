import csv

import pytest

from embodied_rl.cli import main


def test_experts_writes_video_and_success_table(tmp_path, capsys):
    out = tmp_path / "experts"
    code = main(
        [
            "experts",
            "--out",
            str(out),
            "--episodes",
            "2",
            "--tasks",
            "tabletop/reach-v0",
            "tabletop/pick-v0",
            "--video-size",
            "64",
        ]
    )
    assert code == 0
    assert (out / "rollouts.mp4").stat().st_size > 1000
    rows = list(csv.DictReader((out / "success.csv").open()))
    assert [r["task"] for r in rows] == ["reach", "pick", "all"]
    assert all(float(r["success_rate"]) == 1.0 for r in rows)
    assert "| reach | seen | 2 | 100% |" in (out / "success.md").read_text()


def test_cli_reports_bad_task_cleanly(tmp_path, capsys):
    code = main(["experts", "--out", str(tmp_path), "--tasks", "tabletop/fly-v0"])
    assert code == 2
    assert "unknown task_id" in capsys.readouterr().err


def test_demo_is_make_demo():
    """``erl demo`` is the main job ``make demo`` runs: the quickstart pipeline, resumable."""
    from pathlib import Path

    from embodied_rl.cli import _pipeline, build_parser

    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    assert "$(BIN)/erl demo\n" in makefile
    args = build_parser().parse_args(["demo", "bc.steps=10"])
    assert args.func is _pipeline and args.resume and args.stages is None
    assert args.out == "outputs/demo" and args.config.endswith("pipeline/quickstart.yaml")
    assert args.overrides == ["bc.steps=10"]


def test_tasks_lists_both_suites(capsys):
    assert main(["tasks"]) == 0
    listed = capsys.readouterr().out.split()
    assert "tabletop/stack-v0" in listed and "metaworld/pick-place-v3" in listed


def test_collect_train_evaluate_with_overrides(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    args = ["collect", "--task", "tabletop/reach-v0", "--episodes", "8", "--out", str(data)]
    assert main([*args, "--name", "tests/reach-v0", "--no-progress"]) == 0
    dataset = str(data / "tests" / "reach-v0")
    train = ["train", "--algo", "iql", "--dataset", dataset, "--steps", "6", "--out", str(run)]
    train += ["--eval-episodes", "0", "--checkpoint-every", "3", "--batch-size", "16"]
    assert main([*train, "expectile=0.8", "hidden=[32, 32]"]) == 0
    config = (run / "checkpoints" / "last").read_text().strip()
    assert config.endswith("6")
    import json

    stored = json.loads((run / "checkpoints" / config / "config.json").read_text())
    assert stored["agent"]["config"]["expectile"] == 0.8
    assert stored["agent"]["config"]["hidden"] == [32, 32]
    capsys.readouterr()
    assert main([*train, "expectil=0.8"]) == 2
    assert "unknown key(s) ['expectil']" in capsys.readouterr().err
    assert main([*train, "expectile=high"]) == 2
    assert "expectile: expected a number, got 'high'" in capsys.readouterr().err

    # every command takes the run directory (its policy/), a checkpoint or a saved policy
    assert (run / "policy" / "model.safetensors").is_file()
    table = tmp_path / "eval.md"
    capsys.readouterr()
    for policy in (run, run / "checkpoints", run / "checkpoints" / config):
        evaluate = ["evaluate", "--policy", str(policy), "--task", "tabletop/reach-v0"]
        assert main([*evaluate, "--episodes", "2", "--split", "unseen", "--out", str(table)]) == 0
        assert "| reach | unseen | 2 |" in table.read_text()
        assert "reset seeds 1000000000..1000000001" in capsys.readouterr().out  # held-out
    transfer = ["transfer", "--policy", str(run), "--task", "tabletop/reach-v0", "--episodes"]
    transfer += ["2", "--targets", "light", "--out", str(tmp_path / "transfer"), "--videos", "1"]
    assert main(transfer) == 0
    assert "light" in (tmp_path / "transfer" / "transfer.md").read_text()
    for domain in ("nominal", "light"):  # one captioned episode per domain
        assert (tmp_path / "transfer" / f"rollouts_{domain}.gif").stat().st_size > 1000
    assert main(["evaluate", "--policy", str(data), "--task", "tabletop/reach-v0"]) == 2
    assert "no policy/ and no checkpoints/last" in capsys.readouterr().err

    # finetune online: the IQL checkpoint continues with a replay buffer seeded by the dataset
    online = tmp_path / "online"
    finetune = ["finetune", "online", "--checkpoint", str(run / "checkpoints")]
    finetune += ["--dataset", dataset, "--out", str(online)]
    settings = ["env_steps=30", "batch_size=16", "eval_episodes=1", "eval_every=0"]
    settings += ["checkpoint_every=0", "progress=false", "tensorboard=false", "log_every=10"]
    assert main([*finetune, *settings]) == 0
    result = json.loads((online / "result.json").read_text())
    assert result["env_steps"] == 30 and result["gradient_steps"] == 6 + 30  # offline + online
    assert main([*finetune, *settings, "mixing_ratio=2"]) == 2
    assert "mixing_ratio=2" in capsys.readouterr().err

    # finetune ppo: the saved policy with a KL penalty to itself
    ppo_out = tmp_path / "ppo"
    finetune = ["finetune", "ppo", "--pretrained", str(run), "--out", str(ppo_out)]
    settings = ["env_steps=64", "n_envs=1", "eval_episodes=1", "randomization=none"]
    settings += ["ppo.n_steps=32", "ppo.batch_size=16", "ppo.n_epochs=1", "ppo.kl_coef=0.2"]
    assert main([*finetune, *settings]) == 0
    result = json.loads((ppo_out / "result.json").read_text())
    assert result["env_steps"] == 64 and not result["from_scratch"]
    assert main([*finetune, *settings, "ppo.kl_coeff=0.2"]) == 2
    assert "kl_coeff" in capsys.readouterr().err


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"erl {version('embodied-rl')}"


def test_train_and_evaluate_the_vla_from_the_command_line(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    collect = ["collect", "--task", "tabletop/reach-v0", "--episodes", "2", "--out", str(data)]
    collect += ["--obs-mode", "rgb+state", "--image-size", "32", "--horizon", "10"]
    assert main([*collect, "--name", "tests/reach-rgb-v0", "--no-progress"]) == 0
    train = ["train", "--algo", "bc", "--dataset", str(data / "tests" / "reach-rgb-v0")]
    train += ["--policy", "vla", "--steps", "4", "--batch-size", "4", "--eval-episodes", "0"]
    train += ["--out", str(run), "policy.n_layers=1", "policy.action_chunk=2", "warmup_steps=2"]
    assert main(train) == 0
    from embodied_rl.policies import load_policy

    policy = load_policy(run)
    assert policy.config.image_size == 32 and policy.config.action_chunk == 2
    assert policy.config.n_layers == 1
    evaluate = ["evaluate", "--policy", str(run), "--task", "tabletop/reach-v0", "--episodes"]
    assert main([*evaluate, "1"]) == 0
    assert main([*train[:-3], "--policy", "cnn"]) == 2
    assert "use 'mlp', 'vla' or 'vla:PRESET'" in capsys.readouterr().err


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size BATCH_SIZE default: 256" in text and "--seed SEED default: 0" in text
    assert "(default: mlp)" in text  # appended to an option's own help


def _override_examples(parser, path=()):
    """``(command path, [KEY=VALUE examples])`` of every subcommand's overrides help."""
    import argparse
    import re

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _override_examples(sub, (*path, name))
        elif action.dest == "overrides" and action.help:
            examples = re.findall(r"[a-z_][\w.]*=[^\s,)]+", action.help)
            yield path, [e for e in examples if not e.endswith("...")]


def _subparser(parser, name):
    import argparse

    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices[name]


def test_every_override_example_in_help_is_a_valid_key():
    """The KEY=VALUE examples that --help shows load into the configs they name."""
    from embodied_rl.agents import IQLConfig, OnlineConfig, PPOFinetuneConfig
    from embodied_rl.agents.ppo import PPOConfig
    from embodied_rl.cli import build_parser
    from embodied_rl.config import load_config
    from embodied_rl.llm import cli as llm_cli
    from embodied_rl.policies.vla import vla_preset
    from embodied_rl.runners.benchmark import load_suite
    from embodied_rl.runners.pipeline import load_pipeline_config

    def split(prefix, examples):  # (those under prefix., the others)
        inner = [e.removeprefix(f"{prefix}.") for e in examples if e.startswith(f"{prefix}.")]
        return inner, [e for e in examples if not e.startswith(f"{prefix}.")]

    def train(examples):
        policy, agent = split("policy", examples)
        load_config(IQLConfig, None, agent)
        vla_preset("tiny", **{k: int(v) for k, v in (e.split("=") for e in policy)})

    def finetune_ppo(examples):
        ppo, own = split("ppo", examples)
        load_config(PPOFinetuneConfig, None, own), load_config(PPOConfig, None, ppo)

    def llm(name):
        def check(examples):
            parser = build_parser()
            sub = _subparser(_subparser(parser, "llm"), name)
            required = [x for a in sub._actions if a.required and a.option_strings
                        for x in (a.option_strings[0], "unused")]  # fmt: skip
            args = parser.parse_args(["llm", name, *examples, *required])
            if name == "constitutional":
                llm_cli._constitutional_configs(args)
            else:
                cls = {
                    "SFTConfig": "sft",
                    "RewardConfig": "reward",
                    "PPORLHFConfig": "ppo_rlhf",
                    "DPOConfig": "dpo",
                    "BestOfNConfig": "best_of_n",
                    "RLAIFConfig": "rlaif",
                }
                config = llm_cli._COMMANDS[name].config  # fmt: skip
                module = __import__(f"embodied_rl.llm.{cls[config]}", fromlist=[config])
                llm_cli._load_config(getattr(module, config), args)

        return check

    validators = {
        ("train",): train,
        ("ppo",): lambda e: load_config(PPOConfig, None, e),
        ("finetune", "online"): lambda e: load_config(OnlineConfig, None, e),
        ("finetune", "ppo"): finetune_ppo,
        ("bench", "offline-to-online"): lambda e: load_suite("small", e),
        ("pipeline",): lambda e: load_pipeline_config(overrides=e),
        ("demo",): lambda e: load_pipeline_config(overrides=e),
        **{("llm", name): llm(name) for name in llm_cli._COMMANDS},
    }
    seen = 0
    for path, examples in _override_examples(build_parser()):
        if not examples:
            continue
        assert path in validators, f"erl {' '.join(path)} --help shows {examples}: check them"
        validators[path](examples)  # raises, naming the key, if an example is not valid
        seen += len(examples)
    assert seen >= 20
