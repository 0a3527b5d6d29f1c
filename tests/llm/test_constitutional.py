import pytest

from embodied_rl.llm.constitutional import (
    DEFAULT_PRINCIPLE,
    ConstitutionalConfig,
    Principle,
    critique_and_revise,
    critique_prompt,
    revision_prompt,
    revision_sft_data,
)
from embodied_rl.llm.generation import SamplingConfig


def test_prompt_layout():
    p = critique_prompt("Q:", " a.", DEFAULT_PRINCIPLE)
    assert p == f"Q: a.\nCritique Request: {DEFAULT_PRINCIPLE.critique_request}\nCritique:"
    r = revision_prompt("Q:", " a.", " too short. ", DEFAULT_PRINCIPLE)
    assert r.startswith(p + " too short.\nRevision Request: ")
    assert r.endswith("\nRevision:")


def test_critique_and_revise_rounds_and_sft_data(make_model, tokenizer, task):
    other = Principle("short", "Is the response too long?", "Shorten the response.")
    config = ConstitutionalConfig(
        n_rounds=2,
        response_sampling=SamplingConfig(max_new_tokens=6),
        critique_sampling=SamplingConfig(max_new_tokens=6, greedy=True),
        revision_sampling=SamplingConfig(max_new_tokens=6, greedy=True),
        batch_size=3,
        seed=1,
    )
    prompts = task.prompts(5)
    model = make_model()
    out = critique_and_revise(model, tokenizer, prompts, (DEFAULT_PRINCIPLE, other), config)
    assert [r.prompt for r in out] == prompts
    assert all(len(r.critiques) == len(r.revisions) == len(r.principles) == 2 for r in out)
    assert {n for r in out for n in r.principles} <= {"follow-the-request", "short"}
    again = critique_and_revise(model, tokenizer, prompts, (DEFAULT_PRINCIPLE, other), config)
    assert again == out  # seeded
    data = revision_sft_data(out)
    assert all(
        response == r.final
        for (_, response), r in zip(data, (r for r in out if r.final.strip()), strict=True)
    )
    with pytest.raises(ValueError, match="constitution is empty"):
        critique_and_revise(model, tokenizer, prompts, (), config)


def test_task_teaches_the_critique_format(task):
    examples = task.critique_examples(3)
    assert len(examples) == 6
    critique_ask, critique = examples[0]
    assert critique_ask.endswith("Critique:") and critique.startswith(" the response")
    assert examples[1][0].endswith("Revision:")
