"""Evaluating a policy: sampled responses' scores and KL(pi || pi_ref), the two axes of the
reward-vs-KL frontier (the DPO paper's Figure 2); win rates against a baseline through a
judge (the oracle, a rule-based critic, a language model) with position swapping; distinct-n,
perplexity (the alignment tax) and the reward-hacking flag."""

from __future__ import annotations

import dataclasses
import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from embodied_rl.evaluation.transfer import wilson_interval
from embodied_rl.llm.generation import SamplingConfig, generate, sequence_kl
from embodied_rl.llm.models import eval_mode, pad, sequence_logprobs
from embodied_rl.llm.tasks import TaskConfig, critique_text, oracle_score, parse_prompt, words
from embodied_rl.utils.tokenizer import encode

ScoreFn = Callable[[list[str], list[str]], Sequence[float] | torch.Tensor]


def evaluate_policy(
    policy: nn.Module,
    reference: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    scorers: Mapping[str, ScoreFn],
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """One sampled response per prompt: mean (and standard error) of each scorer, the
    Monte-Carlo KL(pi || pi_ref) per response, response length and EOS rate (``sampling``
    None: plain sampling at temperature 1, the distribution the KL is about)."""
    sample = _sample(policy, reference, tokenizer, prompts, sampling, seed, batch_size)
    out = _mean_and_sem("kl", sample.kl)
    for name, fn in scorers.items():
        out.update(_mean_and_sem(name, _scores(fn, prompts, sample.responses)))
    out["response_tokens"] = float(sample.tokens.mean())
    out["eos_rate"] = float(sample.finished.mean())
    return out


@dataclass(frozen=True)
class _Sample:
    responses: list[str]
    kl: np.ndarray  # (N,) Monte-Carlo KL(pi || pi_ref) per response, nats
    tokens: np.ndarray  # (N,) response lengths
    finished: np.ndarray  # (N,) 1 where the response ended with EOS


def _sample(policy, reference, tokenizer, prompts, sampling, seed, batch_size) -> _Sample:
    """One response per prompt from ``policy`` (seeded) with its KL to ``reference``."""
    sampling = sampling or SamplingConfig()
    generator = torch.Generator().manual_seed(seed)
    kl, tokens, finished = [], [], []
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        generation = generate(policy, tokenizer, chunk, sampling, generator)
        kl.append(sequence_kl(policy, reference, generation))
        tokens.append(generation.response_lengths.float())
        finished.append(generation.finished.float())
        texts += generation.responses
    return _Sample(texts, torch.cat(kl).numpy(), torch.cat(tokens).numpy(),
                   torch.cat(finished).numpy())  # fmt: skip


def _as_tensor(fn: ScoreFn) -> Callable[[list[str], list[str]], torch.Tensor]:
    """``fn`` returning a float tensor (what best-of-N ranks with)."""
    return lambda prompts, responses: torch.as_tensor(_scores(fn, prompts, responses))


def _scores(fn: ScoreFn, prompts: Sequence[str], responses: list[str]) -> np.ndarray:
    values = fn(list(prompts), responses)
    values = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return values.astype(np.float64)


def _mean_and_sem(name: str, values: np.ndarray) -> dict[str, float]:
    sem = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {name: float(values.mean()), f"{name}_sem": float(sem)}


# ---------------------------------------------------------------- pairwise judgements
PairJudge = Callable[[str, str, str], str]  # (prompt, a, b) -> "a", "b" or "equal"
VERDICTS = ("a", "b", "equal")


def oracle_judge(config: TaskConfig | None = None, margin: float = 0.0) -> PairJudge:
    """The programmatic oracle as a judge: the response with the higher
    :func:`~embodied_rl.llm.tasks.oracle_score` wins; within ``margin`` it is a tie."""
    config = config or TaskConfig()

    def judge(prompt: str, a: str, b: str) -> str:
        diff = oracle_score(prompt, a, config) - oracle_score(prompt, b, config)
        return "equal" if abs(diff) <= margin else "a" if diff > 0 else "b"

    return judge


def critique_problems(prompt: str, response: str, config: TaskConfig | None = None) -> int:
    """How many problems the programmatic critic
    (:func:`~embodied_rl.llm.tasks.critique_text`) names in ``response`` (sentiment, topic,
    length; 0: "the response is fine")."""
    text = critique_text(parse_prompt(prompt), response, config or TaskConfig())
    return 0 if text == "the response is fine." else text.count(" and ") + 1


def critique_score(
    config: TaskConfig | None = None,
) -> Callable[[list[str], list[str]], np.ndarray]:
    """The rule-based AI judge as an absolute score: minus the problems the critic names.
    Direct RLAIF's reward (Lee et al. 2023, arXiv:2309.00267, section 2.3: the judge scores
    each response and PPO maximises it, no reward model in between)."""
    config = config or TaskConfig()

    def score(prompts: list[str], responses: list[str]) -> np.ndarray:
        return -np.array(
            [critique_problems(p, r, config) for p, r in zip(prompts, responses, strict=True)],
            dtype=np.float64,
        )

    return score


def critique_judge(config: TaskConfig | None = None) -> PairJudge:
    """A rule-based AI judge: the response of which the programmatic critic
    (:func:`~embodied_rl.llm.tasks.critique_text`) names fewer problems wins (sentiment,
    topic, length); equal counts tie. Coarser than the oracle: it sees rules, not scores."""
    config = config or TaskConfig()

    def judge(prompt: str, a: str, b: str) -> str:
        pa, pb = critique_problems(prompt, a, config), critique_problems(prompt, b, config)
        return "equal" if pa == pb else "a" if pa < pb else "b"

    return judge


def lm_judge(judge: Callable[[str], str], constitution: Sequence[str]) -> PairJudge:
    """A language-model judge (e.g. :class:`~embodied_rl.llm.judge.LMJudge`, or any
    ``prompt -> answer`` callable) asked with the AI-feedback labeler's prompt under
    ``constitution``; its ``Preference: A|B|equal`` line is parsed (an unparseable answer
    raises :class:`~embodied_rl.preference.labelers.UnparseableJudgement`)."""
    from embodied_rl.preference.labelers import build_prompt, parse_judgement

    def pair_judge(prompt: str, a: str, b: str) -> str:
        return parse_judgement(judge(build_prompt(prompt, a, b, constitution))).choice

    return pair_judge


@dataclass(frozen=True)
class WinRate:
    """Pairwise comparison of a model against a baseline. ``rate`` counts ties as half a win
    (AlpacaEval's convention); ``low``/``high``: a 95% Wilson interval on it.
    ``inconsistent``: comparisons whose verdict changed with the order of the two responses
    (counted as ties), a measure of the judge's position bias."""

    wins: int
    losses: int
    ties: int
    inconsistent: int

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def rate(self) -> float:
        return (self.wins + 0.5 * self.ties) / self.n

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.wins + 0.5 * self.ties, self.n)

    def __str__(self) -> str:
        low, high = self.interval
        flipped = f", {self.inconsistent} changed with the order" if self.inconsistent else ""
        return (
            f"{self.rate:.0%} [{low:.0%}, {high:.0%}] ({self.wins} W / {self.ties} T / "
            f"{self.losses} L of {self.n}{flipped})"
        )


def win_rate(
    prompts: Sequence[str],
    responses: Sequence[str],
    baseline: Sequence[str],
    judge: PairJudge,
    swap: bool = True,
) -> WinRate:
    """How often ``judge`` prefers ``responses`` over ``baseline`` on the same ``prompts``.

    With ``swap`` each pair is judged in both orders (model first, then baseline first) and a
    verdict that does not survive the swap counts as a tie, which removes the judge's
    position bias from the rate (MT-Bench's protocol)."""
    if not len(prompts) == len(responses) == len(baseline):
        raise ValueError(
            f"{len(prompts)} prompts, {len(responses)} responses and {len(baseline)} baseline "
            "responses: need one of each per prompt"
        )
    if not prompts:
        raise ValueError("no prompts to compare on")
    counts = {"a": 0, "b": 0, "equal": 0}
    inconsistent = 0
    for prompt, ours, theirs in zip(prompts, responses, baseline, strict=True):
        first = _verdict(judge(prompt, ours, theirs))
        if swap:
            second = _verdict(judge(prompt, theirs, ours))
            second = {"a": "b", "b": "a"}.get(second, second)  # in the model-first order
            if second != first:
                inconsistent += 1
                first = "equal"
        counts[first] += 1
    return WinRate(counts["a"], counts["b"], counts["equal"], inconsistent)


def _verdict(value: str) -> str:
    if value not in VERDICTS:
        raise ValueError(f"the judge answered {value!r}; a PairJudge returns one of {VERDICTS}")
    return value


# ---------------------------------------------------------------- text statistics
def distinct_n(responses: Sequence[str], n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams over all word n-grams of
    ``responses`` (0 when there are none). Low values: the policy repeats itself."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    grams = [
        tuple(tokens[i : i + n])
        for tokens in (words(r) for r in responses)
        for i in range(len(tokens) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def perplexity(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch_size: int = 64
) -> float:
    """``exp`` of the mean next-token negative log-likelihood of ``texts`` (each ends with
    EOS; every token after the first is predicted). Before and after alignment on the same
    held-out text, the difference is the alignment tax."""
    if not texts:
        raise ValueError("no texts to compute a perplexity on")
    total, count = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            rows = [ids + [tokenizer.eos_token_id] for ids in encode(tokenizer, chunk)]
            input_ids = pad(rows, tokenizer.pad_token_id)
            attention = pad([[1] * len(r) for r in rows], 0)
            logps = sequence_logprobs(model, input_ids, attention, attention)
            total -= float(logps.sum())
            count += sum(len(r) - 1 for r in rows)
    return math.exp(total / count)


def reward_hacking(
    reward_before: float,
    reward_after: float,
    oracle_before: float,
    oracle_after: float,
    tolerance: float = 0.0,
) -> bool:
    """The reward-hacking flag: the optimised reward rose while the true objective (the
    oracle, or a held-out judge) fell by more than ``tolerance``."""
    return reward_after > reward_before and oracle_after < oracle_before - tolerance


# ---------------------------------------------------------------- the evaluation suite
def evaluate_models(
    models: Mapping[str, nn.Module],
    reference: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    baseline: str,
    judges: Mapping[str, PairJudge],
    held_out_texts: Sequence[str] = (),
    scorers: Mapping[str, ScoreFn] | None = None,
    hacking: tuple[str, str] | None = None,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    swap: bool = True,
    batch_size: int = 256,
    best_of: Sequence[tuple[str, int]] = (),
    best_of_scorer: str = "reward",
) -> list[dict[str, Any]]:
    """Compare saved or trained ``models`` side by side; one row per model, in order.

    Each model answers every prompt once (same seed for all); per row: the win rate against
    ``baseline``'s responses under each of ``judges`` (:func:`win_rate`, position-swapped),
    the mean and standard error of each of ``scorers`` (e.g. ``{"oracle": oracle_scores,
    "reward": reward_model_fn(...)}``), the Monte-Carlo KL to ``reference`` in nats, the
    response length, distinct-1 and distinct-2, the perplexity of ``held_out_texts`` and its
    difference to ``reference``'s (the alignment tax), and with ``hacking=(reward,
    oracle)`` the reward-hacking flag against the baseline (two scorer names).

    ``best_of=[(name, n), ...]`` adds a row ``best-of-n name`` per entry: best-of-``n``
    sampling from that model, kept by ``scorers[best_of_scorer]`` (a reward model). Its KL is
    the analytic ``log n - (n - 1) / n`` to its own model (:func:`best_of_n_kl`; exact to the
    reference when that model is the reference), its perplexity its model's."""
    from embodied_rl.llm.best_of_n import BestOfNConfig, best_of_n, best_of_n_kl

    if baseline not in models:
        raise ValueError(f"baseline={baseline!r} is not among the models {list(models)}")
    scorers = dict(scorers or {})
    if hacking is not None and not set(hacking) <= set(scorers):
        raise ValueError(f"hacking={hacking} names scorers not in {list(scorers)}")
    if best_of and best_of_scorer not in scorers:
        raise ValueError(f"best_of needs the scorer {best_of_scorer!r}; scorers: {list(scorers)}")
    entries = {  # row name -> (the model whose text perplexity is measured, its sample)
        name: (model, _sample(model, reference, tokenizer, prompts, sampling, seed, batch_size))
        for name, model in models.items()
    }
    for name, n in best_of:
        if name not in models:
            raise ValueError(f"best_of names {name!r}, not among the models {list(models)}")
        config = BestOfNConfig(n=n, sampling=sampling or SamplingConfig(), seed=seed)
        chosen = best_of_n(models[name], tokenizer, prompts, _as_tensor(scorers[best_of_scorer]),
                           config).responses  # fmt: skip
        lengths = np.array([len(ids) for ids in encode(tokenizer, chosen)], np.float64)
        kl = np.full(len(prompts), best_of_n_kl(n))
        unknown = np.full(len(prompts), np.nan)  # EOS is not reported by best_of_n
        entries[f"best-of-{n} {name}"] = (models[name], _Sample(chosen, kl, lengths, unknown))
    samples = {name: sample for name, (_, sample) in entries.items()}
    reference_ppl = perplexity(reference, tokenizer, held_out_texts) if held_out_texts else None
    rows = []
    for name, (model, sample) in entries.items():
        row: dict[str, Any] = {"model": name}
        for judge_name, judge in judges.items():
            row[f"win_rate/{judge_name}"] = (
                None if name == baseline
                else win_rate(prompts, sample.responses, samples[baseline].responses, judge, swap)
            )  # fmt: skip
        for scorer, fn in scorers.items():
            row.update(_mean_and_sem(scorer, _scores(fn, prompts, sample.responses)))
        row.update(_mean_and_sem("kl", sample.kl))
        row["response_tokens"] = float(sample.tokens.mean())
        row["distinct_1"] = distinct_n(sample.responses, 1)
        row["distinct_2"] = distinct_n(sample.responses, 2)
        if reference_ppl is not None:
            row["perplexity"] = perplexity(model, tokenizer, held_out_texts)
            row["alignment_tax"] = row["perplexity"] - reference_ppl
        rows.append(row)
    if hacking is not None:
        reward, oracle = hacking
        base = next(r for r in rows if r["model"] == baseline)
        for row in rows:  # the oracle's fall must exceed twice its standard error
            tolerance = 2 * row[f"{oracle}_sem"]
            row["reward_hacking"] = reward_hacking(
                base[reward], row[reward], base[oracle], row[oracle], tolerance
            )
    return rows


def eval_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The header and cells of :func:`evaluate_models`' rows for a Markdown or HTML table."""
    keys = [k for k in rows[0] if k != "model" and not k.endswith("_sem")]
    header = ["model", *(k.replace("win_rate/", "win rate vs baseline, ") for k in keys)]
    cells = []
    for row in rows:
        line = [str(row["model"])]
        for key in keys:
            value = row.get(key)
            if value is None:
                line.append("baseline" if key.startswith("win_rate/") else "-")
            elif isinstance(value, WinRate):
                line.append(str(value))
            elif isinstance(value, bool):
                line.append("yes" if value else "no")
            elif f"{key}_sem" in row:
                line.append(f"{value:.3f} +- {row[f'{key}_sem']:.3f}")
            else:
                line.append(f"{value:.3f}")
        cells.append(line)
    return header, cells


def write_eval_report(
    rows: Sequence[Mapping[str, Any]], out: str | Path, title: str, notes: Sequence[str] = ()
) -> list[Path]:
    """``<out>/eval.md``, ``eval.html`` (the table and ``notes``) and ``eval.json``."""
    from embodied_rl.evaluation.report import html_page, html_table, markdown_table
    from embodied_rl.utils.io import write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header, cells = eval_table(rows)
    md = [f"# {title}", "", markdown_table(header, cells), "", *notes]
    html_parts = [f"<h1>{html.escape(title)}</h1>", html_table(header, cells)]
    html_parts += [f"<p>{html.escape(n)}</p>" for n in notes if n]
    as_json = [
        {k: (dataclasses.asdict(v) | {"rate": v.rate} if isinstance(v, WinRate) else v)
         for k, v in row.items()}
        for row in rows
    ]  # fmt: skip
    paths = [out / "eval.md", out / "eval.html", out / "eval.json"]
    write_text_atomic(paths[0], "\n".join(md) + "\n")
    write_text_atomic(paths[1], html_page(title, html_parts))
    write_text_atomic(paths[2], json.dumps(as_json, indent=2) + "\n")
    return paths
