"""``erl llm``: the command chain of docs/llm.md on tiny budgets (sft -> rm -> ppo, dpo,
best-of-n; sft --examples feedback -> rlaif, constitutional). Every saved model reloads to
the model the command held in memory; bad overrides and JSONL lines name what is wrong."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import re
import shlex
from pathlib import Path

import pytest
import torch

from embodied_rl.config import CONFIG_DIR, from_dict, load_config, read_yaml
from embodied_rl.llm import models
from embodied_rl.llm.best_of_n import BestOfNConfig
from embodied_rl.llm.cli import add_llm_parser
from embodied_rl.llm.constitutional import ConstitutionalConfig
from embodied_rl.llm.dpo import DPOConfig
from embodied_rl.llm.models import load_causal_lm
from embodied_rl.llm.ppo_rlhf import PolicyWithValue, PPORLHFConfig
from embodied_rl.llm.reward import RewardConfig, RewardModel
from embodied_rl.llm.rlaif import RLAIFConfig
from embodied_rl.llm.sft import SFTConfig
from embodied_rl.utils.tokenizer import load_tokenizer

DOC = Path(__file__).resolve().parents[1] / "docs" / "llm.md"
COMMANDS = ("sft", "rm", "ppo", "dpo", "best-of-n", "rlaif", "constitutional")
QUICK = "--no-progress --n-eval 8"  # few held-out prompts for the summary
BUDGETS = {  # added to each documented command line
    "sft": "--n-examples 128 steps=10 log_every=5 batch_size=8",
    "rm": "--n-examples 128 steps=5",
    "ppo": "--n-examples 16 iterations=1 batch_size=8 minibatch_size=4 ppo_epochs=1",
    "dpo": "--n-examples 32 steps=3 batch_size=8",
    "best-of-n": "--n-examples 4 n=2",
    # the undertrained policy's answers are long: keep the judge prompts within 256 positions
    "rlaif": "--n-examples 16 rounds=1 prompts_per_round=4 dpo.steps=2 dpo.batch_size=4 "
    "sampling.max_new_tokens=8",
    "constitutional": "--n-examples 8 sft.steps=2 sft.batch_size=4",
    "eval": "--max-new-tokens 8 --best-of-n 2",
}
TEXT = "Write a positive sentence about the hotel: the hotel was lovely and clean."


def erl_llm(command_line: str) -> str:
    """Run ``erl llm COMMAND_LINE`` through a parser built as the main CLI builds it; returns
    what it printed."""
    parser = argparse.ArgumentParser(prog="erl")
    add_llm_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["llm", *shlex.split(command_line)])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert args.func(args) == 0
    return out.getvalue()


def _recording(save, saved: dict):
    def wrapper(obj, path, *rest, **kwargs):
        saved[str(path)] = obj
        return save(obj, path, *rest, **kwargs)

    return wrapper


@pytest.fixture(scope="module")
def saved():
    """Every model the commands save, by path, as the command held it in memory (the CLI
    imports save_causal_lm from the models module when it runs, so the patch reaches it)."""
    objects: dict = {}
    with pytest.MonkeyPatch.context() as patch:
        for owner, name in (
            (models, "save_causal_lm"),
            (RewardModel, "save"),
            (PolicyWithValue, "save"),
        ):
            patch.setattr(owner, name, _recording(getattr(owner, name), objects))
        yield objects


@torch.no_grad()
def assert_same_logits(model, path) -> None:
    """The causal LM saved in ``path`` (with its tokenizer) computes ``model``'s logits."""
    ids = load_tokenizer(path)([TEXT], return_tensors="pt")["input_ids"]
    reloaded = load_causal_lm(path).eval()
    torch.testing.assert_close(reloaded(ids).logits, model.eval()(ids).logits)


def metric_names(out) -> set[str]:
    with (out / "metrics.csv").open() as f:
        return {row["name"] for row in csv.DictReader(f)}


def documented_chain() -> list[str]:
    """The ``erl llm`` command lines of docs/llm.md, in order (continuations joined)."""
    block = re.search(r"## `erl llm`.*?```bash\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/llm.md lost its erl llm command chain"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    return [line.split("#")[0].removeprefix("erl llm ") for line in lines if line.startswith("erl")]


def shrink(line: str) -> str:
    """A documented command line with the test's budget: options first, then the KEY=VALUE
    overrides, the budget's last so they win."""
    command, *rest = shlex.split(line)
    if command == "eval":  # no overrides (its NAME=DIR are values) and no progress bars
        return shlex.join([command, *rest, "--n-eval", "8", *shlex.split(BUDGETS[command])])
    tokens = [*rest, *shlex.split(f"{QUICK} {BUDGETS[command]}")]
    overrides = [t for t in tokens if "=" in t and not t.startswith("-")]
    options = [t for t in tokens if t not in overrides]
    return shlex.join([command, *options, *overrides])


@pytest.fixture(scope="module")
def chain(tmp_path_factory, saved) -> tuple[Path, dict[str, str]]:
    """docs/llm.md's chain run in a fresh directory: (that directory, summary per --out)."""
    root = tmp_path_factory.mktemp("llm")
    summaries = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the documented outputs/llm/... paths land here
        for line in documented_chain():
            summary = erl_llm(shrink(line))
            summaries[summary.split("wrote ")[1].split("/")[2]] = summary
    return root, summaries


def test_the_documented_chain_covers_every_command():
    commands = [shlex.split(line)[0] for line in documented_chain()]
    assert commands == [
        "sft", "rm", "ppo", "dpo", "best-of-n", "sft", "rlaif", "constitutional", "eval"
    ]  # fmt: skip


def test_sft_trains_a_tiny_model_that_reloads(chain, saved):
    root, summaries = chain
    assert_same_logits(saved["outputs/llm/sft/model"], root / "outputs/llm/sft/model")
    assert summaries["sft"].startswith("llm sft: train_loss") and "oracle" in summaries["sft"]
    assert "wrote outputs/llm/sft/model, outputs/llm/sft/metrics.csv" in summaries["sft"]
    assert {"train/loss", "eval/loss", "test/oracle"} <= metric_names(root / "outputs/llm/sft")


def test_reward_model_reloads_with_the_same_scores(chain, saved):
    path = chain[0] / "outputs/llm/rm/reward_model"
    tokenizer = load_tokenizer(path)  # saved beside it for PPO and best-of-N
    prompts, responses = [TEXT[:42]] * 2, [" the hotel was lovely.", " my book was dull."]
    before = saved["outputs/llm/rm/reward_model"].eval().score(tokenizer, prompts, responses)
    torch.testing.assert_close(RewardModel.load(path).score(tokenizer, prompts, responses), before)
    names = metric_names(path.parent)
    assert {"train/accuracy", "eval/accuracy", "test/oracle_agreement"} <= names


def test_ppo_saves_policy_and_value_model(chain, saved):
    out = chain[0] / "outputs/llm/ppo"
    in_memory, loaded = saved["outputs/llm/ppo/model"], PolicyWithValue.load(out / "model")
    assert_same_logits(in_memory.policy, out / "model")  # also a plain transformers dir
    ids = torch.tensor([[5, 6, 7]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.value_model.eval().token_values(ids, mask),
            in_memory.value_model.eval().token_values(ids, mask),
        )
    assert json.loads((out / "model" / "ppo_state.json").read_text())["iteration"] == 1
    names = metric_names(out)
    assert {"train/score", "train/kl", "train/oracle", "test/reward", "test/kl"} <= names


def test_dpo_model_reloads(chain, saved):
    out = chain[0] / "outputs/llm/dpo"
    assert_same_logits(saved["outputs/llm/dpo/model"], out / "model")
    assert {"train/loss", "eval/reward_accuracy", "test/oracle", "test/kl"} <= metric_names(out)


def test_best_of_n_writes_the_best_responses_with_scores(chain):
    root, summaries = chain
    text = (root / "outputs/llm/best-of-n/responses.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 4 and all(len(row["scores"]) == 2 for row in rows)
    assert all(row["score"] == max(row["scores"]) for row in rows)
    assert "kl_bound 0.193" in summaries["best-of-n"]  # log 2 - 1/2


def test_rlaif_and_constitutional_save_their_models(chain, saved):
    root = chain[0]
    for name in ("helper", "rlaif", "constitutional"):
        assert_same_logits(saved[f"outputs/llm/{name}/model"], root / f"outputs/llm/{name}/model")
    assert {"rlaif/pairs", "rlaif/tie_rate", "test/oracle"} <= metric_names(
        root / "outputs/llm/rlaif"
    )
    out = root / "outputs/llm/constitutional"
    revisions = [json.loads(line) for line in (out / "revisions.jsonl").read_text().splitlines()]
    assert len(revisions) == 8 and {"prompt", "response", "initial"} <= set(revisions[0])
    assert {"train/loss", "test/answers_oracle", "test/revisions_oracle"} <= metric_names(out)


def test_eval_reports_every_model_against_the_baseline(chain):
    root, summaries = chain
    rows = json.loads((root / "outputs/llm/eval/eval.json").read_text())
    names = ["sft", "ppo", "dpo", "rlaif", "constitutional", "best-of-2 sft"]
    assert [r["model"] for r in rows] == names
    assert rows[0]["win_rate/oracle"] is None  # the baseline
    for row in rows[1:]:
        for judge in ("oracle", "critique", "lm"):
            result = row[f"win_rate/{judge}"]
            assert result["wins"] + result["ties"] + result["losses"] == 8
            assert 0 <= result["rate"] <= 1
        assert row["kl"] >= -1.0 and row["perplexity"] > 1 and "reward_hacking" in row
        assert all(1 <= row[f"{o}_rating"] <= 5 for o in ("helpful", "harmless", "concise"))
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert rows[0]["alignment_tax"] == pytest.approx(0.0)
    md = (root / "outputs/llm/eval/eval.md").read_text()
    assert "win rate vs baseline, lm" in md and "| constitutional |" in md
    assert re.search(r"orders 8 held-out pairs as the oracle does in \d+%", md)
    assert "<table>" in (root / "outputs/llm/eval/eval.html").read_text()
    assert summaries["eval"].startswith("model sft;")


def test_eval_names_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="NAME=DIR"):
        erl_llm(f"eval --models {tmp_path} --out {tmp_path}")
    with pytest.raises(ValueError, match="--baseline 'x'"):
        erl_llm(f"eval --models a={tmp_path} --baseline x --out {tmp_path}")
    with pytest.raises(ValueError, match="add --reward-model"):
        erl_llm(f"eval --models a={tmp_path} --best-of-n 4 --out {tmp_path}")


def test_sft_and_dpo_on_jsonl_data(tmp_path, saved):
    demos, pairs = tmp_path / "demos.jsonl", tmp_path / "pairs.jsonl"
    demos.write_text(
        "".join(
            json.dumps({"prompt": f"Q{i}:", "response": f" answer {i}."}) + "\n" for i in range(8)
        )
    )
    pair = {"prompt": "Q1:", "chosen": " answer 1.", "rejected": " no."}
    pairs.write_text(json.dumps(pair) + "\n\n" + json.dumps(pair) + "\n")
    summary = erl_llm(f"sft --data {demos} --out {tmp_path}/sft {QUICK} steps=2")
    assert "oracle" not in summary  # no task prompts, no reference: nothing to evaluate
    assert_same_logits(saved[f"{tmp_path}/sft/model"], f"{tmp_path}/sft/model")
    summary = erl_llm(
        f"dpo --model {tmp_path}/sft/model --data {pairs} --out {tmp_path}/dpo {QUICK} steps=2"
    )
    assert "oracle" not in summary and " kl " in summary  # KL on the data's prompts


@pytest.mark.parametrize(
    ("command", "override", "named"),
    [
        ("sft", "steps=abc", "steps: expected an integer, got 'abc'"),
        ("dpo", "stepz=3", "stepz"),
        ("rlaif", "dpo.beta=high", "dpo.beta"),
        ("constitutional", "sft.steps=abc", "sft.steps: expected an integer"),
    ],
)
def test_bad_override_names_the_key(tmp_path, command, override, named):
    inputs = {"sft": "", "rlaif": f"--model {tmp_path} --judge {tmp_path}"}
    inputs = inputs.get(command, f"--model {tmp_path}")  # never read: the config comes first
    with pytest.raises(ValueError, match=named):
        erl_llm(f"{command} {inputs} --out {tmp_path} {override}")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('{"prompt": "Q:"}', "missing key 'response'"),
        ('{"prompt": "Q:", "response": 3}', "'response' must be a string"),
        ('{"prompt": "Q:", "response": "A"', "not valid JSON"),
        ('["Q:", "A"]', "expected a JSON object"),
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path, line, error):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "Q:", "response": " A."}) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=f"{data}:2: {error}"):
        erl_llm(f"sft --data {data} --out {tmp_path} steps=1")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ("--examples feedback", "max_length=128 cuts the judge prompts"),
        ("--examples feedback --data x.jsonl max_length=256", "picks synthetic data"),
    ],
)
def test_sft_feedback_examples_are_checked(tmp_path, options, error):
    with pytest.raises(ValueError, match=error):
        erl_llm(f"sft {options} --out {tmp_path}")


def test_missing_model_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        erl_llm(f"rm --model {tmp_path}/nowhere --out {tmp_path} steps=1")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        erl_llm(f"{command} --help")
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "KEY=VALUE" in text and "--data" in text and f"outputs/llm/{command}" in text


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sft", SFTConfig),
        ("rm", RewardConfig),
        ("ppo", PPORLHFConfig),
        ("dpo", DPOConfig),
        ("best-of-n", BestOfNConfig),
        ("rlaif", RLAIFConfig),
    ],
)
def test_default_configs_name_only_config_fields(name, cls):
    load_config(cls, CONFIG_DIR / "llm" / f"{name}.yaml")


def test_constitutional_config_holds_its_sft_section():
    values = read_yaml(CONFIG_DIR / "llm" / "constitutional.yaml")
    sft = from_dict(SFTConfig, values.pop("sft"), prefix="sft.")
    from_dict(ConstitutionalConfig, values)
    assert sft.steps == 200 and sft.learning_rate == 1e-4
