"""``erl llm``: the LLM trainers from the command line.

    erl llm sft                                      # a tiny GPT-2 on the synthetic task
    erl llm rm --model outputs/llm/sft/model         # reward model from the SFT model
    erl llm ppo --model outputs/llm/sft/model --reward-model outputs/llm/rm/reward_model
    erl llm eval --models sft=outputs/llm/sft/model ppo=outputs/llm/ppo/model

Each command reads its trainer's config dataclass from ``--config`` (default
``embodied_rl/configs/llm/<command>.yaml``) plus ``KEY=VALUE`` overrides, trains on the
synthetic task of :mod:`embodied_rl.llm.tasks` (or on ``--data FILE.jsonl``), writes its
metrics (``metrics.csv``, TensorBoard) and models under ``--out``, and prints one line:
the oracle score and KL to the reference on held-out task prompts, and the paths written.
Models are directories written by :func:`~embodied_rl.llm.models.save_causal_lm`.

torch and transformers are imported inside the handlers, so ``erl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from embodied_rl.config import CONFIG_DIR

if TYPE_CHECKING:  # imported for real inside the handlers (torch is slow to import)
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from embodied_rl.llm.constitutional import ConstitutionalConfig
    from embodied_rl.llm.pairs import TextPair
    from embodied_rl.llm.reward import RewardModel
    from embodied_rl.llm.sft import SFTConfig
    from embodied_rl.llm.tasks import TaskGenerator

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEMONSTRATION_KEYS = ("prompt", "response")
PAIR_KEYS = ("prompt", "chosen", "rejected")
PROMPT_KEYS = ("prompt",)
FEEDBACK_MAX_LENGTH = 256  # the AI-feedback judge prompt is ~210 tokens
N_NORMALIZE_PAIRS = 500  # their 1,000 responses score mean 0, std 1 under the reward model


# ---------------------------------------------------------------------- configs
def _config_path(args: argparse.Namespace) -> Path | None:
    """``--config``, else ``embodied_rl/configs/llm/<command>.yaml`` when it exists."""
    if args.config:
        return Path(args.config)
    default = CONFIG_DIR / "llm" / f"{args.llm_command}.yaml"
    return default if default.is_file() else None


def _run_overrides(cls: type, args: argparse.Namespace, prefix: str = "") -> list[str]:
    """``--seed`` and ``--no-progress`` as overrides of every ``seed`` / ``progress`` field of
    ``cls`` and of its nested sections (RLAIF's ``dpo.seed`` too)."""
    out = []
    for name, tp in typing.get_type_hints(cls).items():
        if name == "seed" and args.seed is not None:
            out.append(f"{prefix}seed={args.seed}")
        elif name == "progress" and args.no_progress:
            out.append(f"{prefix}progress=false")
        elif dataclasses.is_dataclass(tp):
            out += _run_overrides(tp, args, f"{prefix}{name}.")
    return out


PARALLEL_COMMANDS = ("sft", "rm", "dpo")  # run data-parallel under torchrun


def _is_main() -> bool:
    """Not a secondary process of a data-parallel run (those write nothing)."""
    from embodied_rl.rl.distributed import data_parallel

    parallel = data_parallel()
    if parallel is not None and parallel.world_size > 1:
        return parallel.is_main
    return True


def _load_config(cls: type[T], args: argparse.Namespace) -> T:
    """The command's config: YAML file, then ``KEY=VALUE`` overrides, then the run flags."""
    import os

    from embodied_rl.config import load_config

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.llm_command not in PARALLEL_COMMANDS:
        raise ValueError(
            f"erl llm {args.llm_command} runs in one process; under torchrun only "
            f"{', '.join(PARALLEL_COMMANDS)} train data-parallel"
        )

    overrides = [*args.overrides, *_run_overrides(cls, args)]
    return load_config(cls, _config_path(args), overrides)


def _constitutional_configs(
    args: argparse.Namespace,
) -> tuple[ConstitutionalConfig, SFTConfig]:
    """ConstitutionalConfig from the file and overrides; their ``sft`` section (``sft.KEY=VALUE``)
    is the SFTConfig of the fine-tuning on the revisions (as ``erl finetune ppo`` takes ppo.*)."""
    from embodied_rl.config import from_dict, merge, parse_overrides, read_yaml
    from embodied_rl.llm.constitutional import ConstitutionalConfig
    from embodied_rl.llm.sft import SFTConfig

    path = _config_path(args)
    flags = [*_run_overrides(ConstitutionalConfig, args), *_run_overrides(SFTConfig, args, "sft.")]
    values = merge(read_yaml(path) if path else {}, parse_overrides([*args.overrides, *flags]))
    sft = values.pop("sft", {})
    return from_dict(ConstitutionalConfig, values), from_dict(SFTConfig, sft, prefix="sft.")


# ---------------------------------------------------------------------- data
def _read_jsonl(path: str | Path, keys: Sequence[str]) -> list[dict[str, Any]]:
    """One JSON object per line, each with string values for ``keys`` (errors name file:line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            message = f"{where}: not valid JSON ({error.msg}); write one object per line"
            raise ValueError(message) from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object with keys {list(keys)}, got {row!r}")
        for key in keys:
            if key not in row:
                raise ValueError(f"{where}: missing key {key!r}; every line needs {list(keys)}")
            if not isinstance(row[key], str):
                raise ValueError(f"{where}: {key!r} must be a string, got {row[key]!r}")
        if not row["prompt"].strip():
            raise ValueError(f"{where}: 'prompt' is empty; every example needs a prompt")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no examples; write one JSON object per line ({keys})")
    return rows


def _task(seed: int, split: str) -> TaskGenerator:
    """The synthetic task's data generator of ``split``, seeded as the demo seeds it."""
    from embodied_rl.llm.demo import SPLITS
    from embodied_rl.llm.tasks import TaskConfig, TaskGenerator

    return TaskGenerator(TaskConfig(), seed * 100 + SPLITS[split])


def _demonstrations(args: argparse.Namespace, seed: int) -> list[tuple[str, str]]:
    """SFT (prompt, response) pairs: --data, or the synthetic ``--examples`` kind."""
    if args.data:
        if args.examples != "demonstrations":
            raise ValueError(f"--examples {args.examples} picks synthetic data; drop it or --data")
        return [(r["prompt"], r["response"]) for r in _read_jsonl(args.data, DEMONSTRATION_KEYS)]
    train, n = _task(seed, "train"), args.n_examples
    if args.examples == "demonstrations":
        return train.demonstrations(n)
    # the judge/critic of examples/llm_rlaif_constitutional.py: 3 judge : 3 critique : 2 demos
    return (
        train.judge_examples(3 * n // 8)
        + train.critique_examples(3 * n // 16)
        + train.demonstrations(n // 4)
    )


def _pairs(args: argparse.Namespace, seed: int) -> list[TextPair]:
    """Preference pairs: --data, or the synthetic task's annotator-labelled comparisons."""
    from embodied_rl.llm.pairs import TextPair

    if args.data:
        rows = _read_jsonl(args.data, PAIR_KEYS)
        return [TextPair(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    return _task(seed, "train").comparisons(args.n_examples)


def _held_out_pairs(args: argparse.Namespace, seed: int) -> list[TextPair] | None:
    """``--n-eval`` held-out synthetic comparisons (None with --data)."""
    if args.data or args.n_eval == 0:
        return None
    return _task(seed, "eval").comparisons(args.n_eval)


def _prompts(args: argparse.Namespace, seed: int, split: str) -> list[str]:
    """Prompts: --data, or ``--n-examples`` synthetic ones of ``split``."""
    if args.data:
        return [r["prompt"] for r in _read_jsonl(args.data, PROMPT_KEYS)]
    return _task(seed, split).prompts(args.n_examples)


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    from embodied_rl.utils.io import write_text_atomic

    if not _is_main():
        return path

    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))
    return path


# ---------------------------------------------------------------------- models
def _load_model(path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(causal LM, tokenizer) from a directory written by ``save_causal_lm``."""
    from embodied_rl.llm.models import load_causal_lm
    from embodied_rl.utils.tokenizer import load_tokenizer

    model = load_causal_lm(path)
    if not (Path(path) / "tokenizer_config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no tokenizer (tokenizer_config.json); save the model with "
            "save_causal_lm(model, path, tokenizer)"
        )
    return model, load_tokenizer(path)


def _tiny_model(texts: Iterable[str], seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(new tiny GPT-2, byte-level BPE tokenizer trained on ``texts``) at the demo's sizes."""
    from embodied_rl.llm.demo import DemoConfig
    from embodied_rl.llm.models import build_causal_lm, tiny_gpt2_config
    from embodied_rl.utils.tokenizer import train_tokenizer

    size = DemoConfig()
    tokenizer = train_tokenizer(texts, vocab_size=size.vocab_size)
    config = tiny_gpt2_config(tokenizer, size.n_layer, size.n_embd, size.n_head, size.n_positions)
    return build_causal_lm(config, seed=seed), tokenizer


def _reference(args: argparse.Namespace) -> PreTrainedModel | None:
    """The frozen KL reference: ``--reference``, else the starting ``--model`` (None: neither)."""
    from embodied_rl.llm.models import freeze, load_causal_lm

    path = getattr(args, "reference", None) or args.model
    return freeze(load_causal_lm(path)) if path else None


def _load_reward_model(
    path: str, tokenizer: PreTrainedTokenizerBase
) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """(RewardModel, the tokenizer it reads: its own if saved beside it, else ``tokenizer``)."""
    from embodied_rl.llm.reward import RewardModel
    from embodied_rl.utils.tokenizer import load_tokenizer

    reward_model = RewardModel.load(path)
    if (Path(path) / "tokenizer_config.json").is_file():
        tokenizer = load_tokenizer(path)
    return reward_model, tokenizer


def _save_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, args: argparse.Namespace
) -> Path:
    from embodied_rl.llm.models import save_causal_lm

    path = Path(args.out) / "model"
    return save_causal_lm(model, path, tokenizer) if _is_main() else path


# ---------------------------------------------------------------------- evaluation and output
def _mean_oracle(prompts: list[str], responses: list[str]) -> float:
    from embodied_rl.llm.tasks import oracle_scores

    return sum(oracle_scores(prompts, responses)) / len(prompts)


def _evaluate(
    args: argparse.Namespace,
    policy: PreTrainedModel,
    reference: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    data_prompts: Sequence[str],
    reward_fn: Callable | None = None,
) -> dict[str, float]:
    """One sampled response per held-out task prompt (``--n-eval``; with --data, the data's
    first prompts): the oracle's mean (synthetic task), the reward's (given ``reward_fn``)
    and the KL to ``reference`` (given) in nats."""
    from embodied_rl.llm.evaluation import evaluate_policy
    from embodied_rl.llm.tasks import oracle_scores

    scorers: dict[str, Callable] = {} if args.data else {"oracle": oracle_scores}
    if reward_fn is not None:
        scorers["reward"] = reward_fn
    if args.n_eval == 0 or (not scorers and reference is None):
        return {}
    if args.data:
        prompts = list(data_prompts[: args.n_eval])
    else:
        prompts = _task(seed, "test").prompts(args.n_eval)
    result = evaluate_policy(
        policy, policy if reference is None else reference, tokenizer, prompts, scorers, seed=seed
    )
    names = [*scorers, *(["kl"] if reference is not None else [])]
    return {name: result[name] for name in names}


def _last(rows: Sequence[Mapping[str, float]], *keys: str) -> dict[str, float]:
    """The named metrics of the trainer's last logged row (``train/loss`` -> ``train_loss``)."""
    return {k.replace("/", "_"): rows[-1][k] for k in keys if rows and k in rows[-1]}


def _report(
    args: argparse.Namespace,
    step: int,
    evaluation: Mapping[str, float],
    written: Sequence[Path],
    trained: Mapping[str, float] | None = None,
) -> int:
    """Append ``evaluation`` to ``<out>/metrics.csv`` as ``test/*`` at ``step``; print one line
    with it, the trainer's ``trained`` numbers and the paths written."""
    from embodied_rl.utils.metrics import MetricsLogger

    out = Path(args.out)
    if not _is_main():  # the main process evaluates, writes and prints
        return 0
    if evaluation:
        writer = MetricsLogger(out, tensorboard=False)
        writer.write(step, {f"test/{k}": v for k, v in evaluation.items()})
        writer.close()
    numbers = {**(trained or {}), **evaluation}
    shown = ", ".join(f"{k} {v:.3g}" for k, v in numbers.items()) or "done"
    paths = [*written, *([out / "metrics.csv"] if (out / "metrics.csv").is_file() else [])]
    print(f"llm {args.llm_command}: {shown}; wrote {', '.join(str(p) for p in paths)}")
    return 0


# ---------------------------------------------------------------------- commands
def _sft(args: argparse.Namespace) -> int:
    from embodied_rl.llm.sft import SFTConfig, SFTTrainer

    config = _load_config(SFTConfig, args)
    if args.examples == "feedback" and config.max_length < FEEDBACK_MAX_LENGTH:
        raise ValueError(
            f"--examples feedback: max_length={config.max_length} cuts the judge prompts "
            f"(about 210 tokens); add max_length={FEEDBACK_MAX_LENGTH}"
        )
    examples = _demonstrations(args, config.seed)
    if args.model:
        policy, tokenizer = _load_model(args.model)
    else:
        texts = (p + r for p, r in examples) if args.data else _task(config.seed, "train").corpus()
        policy, tokenizer = _tiny_model(texts, config.seed)
    reference = _reference(args)
    held_out = None
    if not args.data and args.n_eval:
        held_out = _task(config.seed, "eval").demonstrations(args.n_eval)
    rows = SFTTrainer(policy, tokenizer, config).train(examples, args.out, held_out)
    path = _save_model(policy, tokenizer, args)
    prompts = [p for p, _ in examples]
    evaluation = _evaluate(args, policy, reference, tokenizer, config.seed, prompts)
    trained = _last(rows, "train/loss", "eval/loss")
    return _report(args, config.steps, evaluation, [path], trained)


def _rm(args: argparse.Namespace) -> int:
    from embodied_rl.llm.demo import oracle_agreement
    from embodied_rl.llm.reward import RewardConfig, RewardModel, RewardTrainer

    config = _load_config(RewardConfig, args)
    policy, tokenizer = _load_model(args.model)
    pairs, held_out = _pairs(args, config.seed), _held_out_pairs(args, config.seed)
    reward_model = RewardModel.from_causal_lm(policy, seed=config.seed)  # InstructGPT: from SFT
    trainer = RewardTrainer(reward_model, tokenizer, config)
    rows = trainer.train(pairs, out=args.out, eval_pairs=held_out)
    some = pairs[:N_NORMALIZE_PAIRS]
    responses = [p.chosen for p in some] + [p.rejected for p in some]
    reward_model.normalize(tokenizer, [p.prompt for p in some] * 2, responses)
    path = Path(args.out) / "reward_model"
    if _is_main():
        reward_model.save(path)
        tokenizer.save_pretrained(str(path))  # PPO and best-of-N score with it
    evaluation = {}
    if held_out:  # how often the reward model orders a pair as the oracle does
        agreement = oracle_agreement(reward_model, tokenizer, held_out)
        evaluation["oracle_agreement"] = agreement["rm_oracle_agreement"]
    trained = _last(rows, "train/accuracy", "eval/accuracy")
    return _report(args, config.steps, evaluation, [path], trained)


def _ppo(args: argparse.Namespace) -> int:
    from embodied_rl.llm.ppo_rlhf import PPORLHFConfig, PPORLHFTrainer
    from embodied_rl.llm.reward import reward_model_fn

    config = _load_config(PPORLHFConfig, args)
    policy, tokenizer = _load_model(args.model)
    reference = _reference(args)
    reward_model, reward_tokenizer = _load_reward_model(args.reward_model, tokenizer)
    reward_fn = reward_model_fn(reward_model, reward_tokenizer)
    # InstructGPT starts the value model from the reward model; it must read the policy's tokens
    shared = reward_tokenizer.get_vocab() == tokenizer.get_vocab()
    prompts = _prompts(args, config.seed, "rl")
    trainer = PPORLHFTrainer(
        policy,
        tokenizer,
        reward_fn,
        config,
        reference,
        value_model=copy.deepcopy(reward_model) if shared else None,
        metrics_fn=None if args.data else lambda p, r: {"oracle": _mean_oracle(p, r)},
    )
    rows = trainer.train(prompts, out=args.out)
    path = trainer.save(Path(args.out) / "model")  # a transformers dir + value_model/
    evaluation = _evaluate(args, policy, reference, tokenizer, config.seed, prompts, reward_fn)
    trained = _last(rows, "train/score", "train/kl")
    return _report(args, config.iterations, evaluation, [path], trained)


def _dpo(args: argparse.Namespace) -> int:
    from embodied_rl.llm.dpo import DPOConfig, DPOTrainer

    config = _load_config(DPOConfig, args)
    policy, tokenizer = _load_model(args.model)
    reference = _reference(args)
    pairs = _pairs(args, config.seed)
    trainer = DPOTrainer(policy, tokenizer, config, reference)
    rows = trainer.train(pairs, out=args.out, eval_pairs=_held_out_pairs(args, config.seed))
    path = _save_model(policy, tokenizer, args)
    prompts = [p.prompt for p in pairs]
    evaluation = _evaluate(args, policy, reference, tokenizer, config.seed, prompts)
    trained = _last(rows, "train/reward_accuracy", "eval/reward_accuracy")
    return _report(args, config.steps, evaluation, [path], trained)


def _best_of_n(args: argparse.Namespace) -> int:
    from embodied_rl.llm.best_of_n import BestOfNConfig, best_of_n, best_of_n_kl
    from embodied_rl.llm.reward import reward_model_fn

    config = _load_config(BestOfNConfig, args)
    policy, tokenizer = _load_model(args.model)
    reward_model, reward_tokenizer = _load_reward_model(args.reward_model, tokenizer)
    prompts = _prompts(args, config.seed, "test")
    result = best_of_n(
        policy, tokenizer, prompts, reward_model_fn(reward_model, reward_tokenizer), config
    )
    rows = [
        {"prompt": p, "response": r, "score": s.max().item(), "scores": s.tolist()}
        for p, r, s in zip(prompts, result.responses, result.scores, strict=True)
    ]
    path = _write_jsonl(Path(args.out) / "responses.jsonl", rows)
    evaluation = {"reward": result.best_scores.mean().item(), "kl_bound": best_of_n_kl(config.n)}
    if not args.data:
        evaluation["oracle"] = _mean_oracle(prompts, result.responses)
        evaluation["oracle_one_sample"] = _mean_oracle(prompts, [s[0] for s in result.samples])
    return _report(args, 0, evaluation, [path])


def _rlaif(args: argparse.Namespace) -> int:
    from embodied_rl.llm.rlaif import DEFAULT_CONSTITUTION, RLAIFConfig, ai_feedback_labeler, rlaif
    from embodied_rl.llm.tasks import JUDGE_CONSTITUTION, oracle_scores

    config = _load_config(RLAIFConfig, args)
    policy, tokenizer = _load_model(args.model)
    reference = _reference(args)
    judge, judge_tokenizer = _load_model(args.judge)
    constitution = DEFAULT_CONSTITUTION if args.data else JUDGE_CONSTITUTION
    labeler = ai_feedback_labeler(judge, judge_tokenizer, constitution)
    prompts = _prompts(args, config.seed, "rl")
    score_fn = None if args.data else oracle_scores  # adds the labels' agreement with the oracle
    rows = rlaif(policy, tokenizer, labeler, prompts, config, reference, score_fn, args.out)
    if not any(row["pairs"] for row in rows):  # a verdict that flips with the order is a tie
        logger.warning(
            "the judge %s decided no pair (last round: tie rate %.2f, skip rate %.2f), so the "
            "policy is unchanged; train the judge longer",
            args.judge,
            rows[-1]["tie_rate"],
            rows[-1]["skip_rate"],
        )
    path = _save_model(policy, tokenizer, args)
    evaluation = _evaluate(args, policy, reference, tokenizer, config.seed, prompts)
    trained = _last(rows, "pairs", "label_agreement")
    return _report(args, config.rounds, evaluation, [path], trained)


def _constitutional(args: argparse.Namespace) -> int:
    from embodied_rl.llm.constitutional import critique_and_revise, revision_sft_data
    from embodied_rl.llm.sft import SFTTrainer

    config, sft_config = _constitutional_configs(args)
    policy, tokenizer = _load_model(args.model)
    critic, critic_tokenizer = _load_model(args.critic) if args.critic else (policy, tokenizer)
    reference = _reference(args)
    prompts = _prompts(args, config.seed, "rl")
    revisions = critique_and_revise(critic, critic_tokenizer, prompts, config=config)
    rows = [
        {"prompt": r.prompt, "response": r.final, "initial": r.initial, "critiques": r.critiques}
        for r in revisions
    ]  # the sft --data format, with the first answer and the critiques beside
    written = [_write_jsonl(Path(args.out) / "revisions.jsonl", rows)]
    data = revision_sft_data(revisions)
    if not data:
        raise ValueError(
            f"every revision by {args.critic or args.model} is empty; train a critic with "
            "erl llm sft --examples feedback and pass it as --critic"
        )
    SFTTrainer(policy, tokenizer, sft_config).train(data, out=args.out)
    written.append(_save_model(policy, tokenizer, args))
    evaluation = {}
    if not args.data:
        evaluation["answers_oracle"] = _mean_oracle(prompts, [r.initial for r in revisions])
        evaluation["revisions_oracle"] = _mean_oracle(prompts, [r.final for r in revisions])
    evaluation.update(_evaluate(args, policy, reference, tokenizer, config.seed, prompts))
    return _report(args, sft_config.steps, evaluation, written)


# ---------------------------------------------------------------------- the parser
def _dir(flag: str, help: str, required: bool = False) -> tuple[str, dict[str, Any]]:
    """An option naming a model directory."""
    return flag, {"metavar": "DIR", "required": required, "help": help}


_MODEL = _dir("--model", "the policy: a save_causal_lm dir, e.g. outputs/llm/sft/model", True)
_REFERENCE = _dir("--reference", "the frozen KL reference (default: the --model)")
_REWARD_MODEL = _dir("--reward-model", "a reward model dir written by erl llm rm", True)
_EXAMPLES = (
    "--examples",
    {
        "choices": ("demonstrations", "feedback"),
        "default": "demonstrations",
        "help": "synthetic data: the task's demonstrations, or 'feedback': judge and "
        "critique/revision examples that teach a model to be an rlaif --judge and a "
        f"constitutional --critic (needs max_length={FEEDBACK_MAX_LENGTH})",
    },
)


@dataclasses.dataclass(frozen=True)
class _Command:
    """One ``erl llm`` subcommand: its handler, config, data and input options."""

    handler: Callable[[argparse.Namespace], int]
    help: str
    config: str  # the dataclass the KEY=VALUE overrides set
    example: str  # example overrides
    data_keys: tuple[str, ...]  # of each --data JSONL line
    synthetic: str  # what the synthetic task gives without --data
    n_examples: int
    inputs: tuple[tuple[str, dict[str, Any]], ...]


_COMMANDS: dict[str, _Command] = {
    "sft": _Command(
        handler=_sft,
        help="supervised fine-tuning on demonstrations -> <out>/model",
        config="SFTConfig",
        example="steps=200 learning_rate=1e-4",
        data_keys=DEMONSTRATION_KEYS,
        synthetic="demonstrations",
        n_examples=8_000,
        inputs=(
            _dir(
                "--model",
                "start from this model (default: a new tiny GPT-2 and a tokenizer "
                "trained on the data)",
            ),
            _EXAMPLES,
        ),
    ),
    "rm": _Command(
        handler=_rm,
        help="reward model on preference pairs, started from --model -> <out>/reward_model",
        config="RewardConfig",
        example="steps=400 use_margin=true",
        data_keys=PAIR_KEYS,
        synthetic="annotator-labelled comparisons",
        n_examples=6_000,
        inputs=(_MODEL,),
    ),
    "ppo": _Command(
        handler=_ppo,
        help="PPO-RLHF against a reward model with a KL penalty -> <out>/model",
        config="PPORLHFConfig",
        example="iterations=20 kl_coef=0.05",
        data_keys=PROMPT_KEYS,
        synthetic="prompts",
        n_examples=2_000,
        inputs=(_MODEL, _REFERENCE, _REWARD_MODEL),
    ),
    "dpo": _Command(
        handler=_dpo,
        help="DPO (or IPO, hinge) on preference pairs -> <out>/model",
        config="DPOConfig",
        example="beta=0.1 loss_type=ipo",
        data_keys=PAIR_KEYS,
        synthetic="annotator-labelled comparisons",
        n_examples=6_000,
        inputs=(_MODEL, _REFERENCE),
    ),
    "best-of-n": _Command(
        handler=_best_of_n,
        help="best-of-N sampling with a reward model -> <out>/responses.jsonl",
        config="BestOfNConfig",
        example="n=16 sampling.temperature=0.7",
        data_keys=PROMPT_KEYS,
        synthetic="held-out prompts",
        n_examples=128,
        inputs=(_MODEL, _REWARD_MODEL),
    ),
    "rlaif": _Command(
        handler=_rlaif,
        help="RLAIF: an AI judge labels pairs of the policy's samples, DPO learns from them "
        "-> <out>/model",
        config="RLAIFConfig",
        example="rounds=3 dpo.steps=100",
        data_keys=PROMPT_KEYS,
        synthetic="prompts",
        n_examples=2_000,
        inputs=(
            _MODEL,
            _REFERENCE,
            _dir("--judge", "the AI-feedback judge (erl llm sft --examples feedback)", True),
        ),
    ),
    "constitutional": _Command(
        handler=_constitutional,
        help="constitutional AI: critique -> revision -> SFT on the revisions -> <out>/model "
        "and <out>/revisions.jsonl",
        config="ConstitutionalConfig (and sft.KEY for the SFTConfig)",
        example="n_rounds=2 sft.steps=100",
        data_keys=PROMPT_KEYS,
        synthetic="prompts",
        n_examples=512,
        inputs=(
            _MODEL,
            _dir(
                "--critic",
                "the model that answers, critiques and revises (default: the "
                "--model itself; erl llm sft --examples feedback trains one)",
            ),
        ),
    ),
}


def _eval(args: argparse.Namespace) -> int:
    """``erl llm eval``: the evaluation suite over saved models (see ``evaluate_models``)."""
    import torch

    from embodied_rl.llm.demo import oracle_agreement
    from embodied_rl.llm.evaluation import (
        critique_judge,
        eval_table,
        evaluate_models,
        lm_judge,
        oracle_judge,
        write_eval_report,
    )
    from embodied_rl.llm.generation import SamplingConfig
    from embodied_rl.llm.judge import LMJudge
    from embodied_rl.llm.models import freeze
    from embodied_rl.llm.objectives import OBJECTIVES, objective_scorer, rating_scorer
    from embodied_rl.llm.reward import reward_model_fn
    from embodied_rl.llm.tasks import JUDGE_CONSTITUTION, oracle_scores

    if args.best_of_n and not args.reward_model:
        raise ValueError(
            f"--best-of-n {args.best_of_n} ranks with a reward model: add --reward-model"
        )
    torch.manual_seed(args.seed)
    paths: dict[str, str] = {}
    for item in args.models:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--models {item!r}: write NAME=DIR, e.g. sft=outputs/llm/sft/model")
        if name in paths:
            raise ValueError(f"--models names {name!r} twice")
        paths[name] = path
    baseline = args.baseline or next(iter(paths))
    if baseline not in paths:
        raise ValueError(f"--baseline {baseline!r} is not among --models {list(paths)}")
    loaded = {name: _load_model(path) for name, path in paths.items()}
    tokenizer = loaded[baseline][1]
    for name, (_, own) in loaded.items():  # one tokenizer reads every model's prompts
        if own.get_vocab() != tokenizer.get_vocab():
            raise ValueError(
                f"--models {name} has another tokenizer than the baseline {baseline}; compare "
                "models fine-tuned from the same base model"
            )
    models = {name: freeze(model) for name, (model, _) in loaded.items()}
    reference_path = paths.get(args.reference, args.reference) or paths[baseline]
    reference = freeze(_load_model(reference_path)[0])
    judges = {}
    for spec in args.judges.split(","):
        kind, _, path = spec.partition("=")
        if kind == "oracle":
            judges["oracle"] = oracle_judge()
        elif kind == "critique":
            judges["critique"] = critique_judge()
        elif kind == "lm" and path:
            judge_model, judge_tokenizer = _load_model(path)
            lm = LMJudge(freeze(judge_model), judge_tokenizer, rationale_tokens=0)
            judges["lm"] = lm_judge(lm, JUDGE_CONSTITUTION)
        else:
            raise ValueError(
                f"--judges {spec!r}: choose from oracle, critique and lm=DIR (a judge model)"
            )
    scorers = {"oracle": oracle_scores}
    if args.objectives:  # each objective's oracle and its 1-5 rating
        for objective in OBJECTIVES:
            scorers[objective] = objective_scorer(objective)
            scorers[f"{objective}_rating"] = rating_scorer(objective)
    hacking = None
    reward_note = []
    if args.reward_model:
        reward_model, reward_tokenizer = _load_reward_model(args.reward_model, tokenizer)
        scorers["reward"] = reward_model_fn(freeze(reward_model), reward_tokenizer)
        hacking = ("reward", "oracle")
        pairs = _task(args.seed, "eval").comparisons(args.n_eval)
        agreement = oracle_agreement(reward_model, reward_tokenizer, pairs)
        reward_note = [
            f"Reward model {args.reward_model}: orders {len(pairs)} held-out pairs as the oracle "
            f"does in {agreement['rm_oracle_agreement']:.0%} (the annotator's own labels: "
            f"{agreement['annotator_oracle_agreement']:.0%})."
        ]
    test = _task(args.seed, "test")
    prompts = test.prompts(args.n_eval)
    held_out = [p + r for p, r in test.demonstrations(args.n_eval)]
    rows = evaluate_models(
        models, reference, tokenizer, prompts, baseline, judges, held_out, scorers, hacking,
        SamplingConfig(max_new_tokens=args.max_new_tokens), seed=args.seed,
        best_of=[(baseline, args.best_of_n)] if args.best_of_n else (),
    )  # fmt: skip
    notes = [
        f"{args.n_eval} held-out task prompts (seed {args.seed}), one sampled response per "
        f"model and prompt (temperature 1, up to {args.max_new_tokens} tokens); win rates "
        f"against {baseline} with both orders judged (a verdict that changes with the order is "
        "a tie; ties count half; 95% Wilson intervals); kl: Monte-Carlo KL to "
        f"{args.reference or baseline} in nats; perplexity of {args.n_eval} held-out "
        "demonstrations, alignment tax: its difference to the reference's.",
        "Models: " + ", ".join(f"{n} = {p}" for n, p in paths.items()),
        *reward_note,
    ]
    written = write_eval_report(rows, args.out, f"LLM evaluation against {baseline}", notes)
    header, cells = eval_table(rows)
    for line in cells:
        print("; ".join(f"{h} {c}" for h, c in zip(header, line, strict=True)))
    print(f"llm eval: wrote {', '.join(str(p) for p in written)}")
    return 0


def add_llm_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``erl llm {sft,rm,ppo,dpo,best-of-n,rlaif,constitutional,eval}`` to ``sub``."""
    llm = sub.add_parser(
        "llm",
        help="LLM trainers on the offline synthetic task or JSONL data: SFT, reward model, "
        "PPO-RLHF, DPO, best-of-N, RLAIF, constitutional AI",
        description="Train and sample LLM policies (see docs/llm.md, 'erl llm').",
    )
    commands = llm.add_subparsers(dest="llm_command", required=True, metavar="COMMAND")
    for name, command in _COMMANDS.items():
        parser = commands.add_parser(name, help=command.help, description=command.help)
        parser.add_argument(
            "overrides",
            nargs="*",
            metavar="KEY=VALUE",
            help=f"{command.config} overrides, dotted for sections, e.g. {command.example}",
        )
        for flag, options in command.inputs:
            parser.add_argument(flag, **options)
        parser.add_argument(
            "--data",
            metavar="FILE.jsonl",
            default=None,
            help=f"your data, one JSON object per line with keys {list(command.data_keys)} "
            f"(default: the synthetic task's {command.synthetic})",
        )
        parser.add_argument(
            "--n-examples",
            type=int,
            metavar="N",
            default=command.n_examples,
            help=f"synthetic {command.synthetic} to generate (without --data)",
        )
        parser.add_argument(
            "--n-eval",
            type=int,
            metavar="N",
            default=256,
            help="held-out task prompts (and comparisons) for the summary; 0: none",
        )
        parser.add_argument(
            "--config",
            default=None,
            metavar="YAML",
            help=f"YAML {command.config} (default embodied_rl/configs/llm/{name}.yaml)",
        )
        out = f"outputs/llm/{name}"
        parser.add_argument(
            "--out", default=out, metavar="DIR", help=f"output directory (default {out})"
        )
        parser.add_argument(
            "--seed",
            type=int,
            metavar="N",
            default=None,
            help="sets every seed of the config (data, initialisation, sampling)",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
        parser.set_defaults(func=command.handler)
    evaluate = commands.add_parser(
        "eval",
        help="judge saved models against a baseline: win rates (oracle, rule-based critic, "
        "LM judge), oracle and reward, KL, perplexity (alignment tax), distinct-n",
        description="The LLM evaluation suite: a Markdown, HTML and JSON report under --out.",
    )
    evaluate.add_argument(
        "--models",
        nargs="+",
        required=True,
        metavar="NAME=DIR",
        help="models saved by erl llm (directories with safetensors and a tokenizer)",
    )
    evaluate.add_argument(
        "--baseline",
        default=None,
        metavar="NAME",
        help="the model the others are judged against (default: the first)",
    )
    evaluate.add_argument(
        "--reference",
        default=None,
        metavar="NAME|DIR",
        help="the KL and perplexity reference (default: the baseline)",
    )
    evaluate.add_argument(
        "--judges",
        default="oracle,critique",
        metavar="LIST",
        help="comma-separated: oracle, critique, lm=DIR (default: oracle,critique)",
    )
    evaluate.add_argument(
        "--reward-model",
        default=None,
        metavar="DIR",
        help="adds its mean reward and the reward-hacking flag",
    )
    evaluate.add_argument(
        "--n-eval",
        type=int,
        default=256,
        metavar="N",
        help="held-out prompts and perplexity texts (default 256)",
    )
    evaluate.add_argument(
        "--best-of-n",
        type=int,
        default=0,
        metavar="N",
        help="adds best-of-N sampling from the baseline, ranked by --reward-model (0: none)",
    )
    evaluate.add_argument(
        "--objectives",
        action="store_true",
        help="adds the helpful, harmless and concise oracles and their 1-5 ratings",
    )
    evaluate.add_argument("--max-new-tokens", type=int, default=24, metavar="N")
    evaluate.add_argument("--seed", type=int, default=0, metavar="N")
    evaluate.add_argument("--out", default="outputs/llm/eval", metavar="DIR")
    evaluate.set_defaults(func=_eval)
