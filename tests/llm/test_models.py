import pytest
import torch

from embodied_rl.llm.models import (
    IGNORE_INDEX,
    atomic_dir,
    last_token_index,
    load_causal_lm,
    pad,
    position_ids_from_mask,
    save_causal_lm,
    token_logprobs,
)
from embodied_rl.utils.tokenizer import load_tokenizer, train_tokenizer


def test_pad_both_sides():
    assert pad([[1, 2], [3]], 0).tolist() == [[1, 2], [3, 0]]
    assert pad([[1, 2], [3]], 0, side="left").tolist() == [[1, 2], [0, 3]]
    with pytest.raises(ValueError, match="side"):
        pad([[1]], 0, side="middle")


def test_last_token_and_positions_for_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert last_token_index(right).tolist() == [2, 1]
    assert last_token_index(left).tolist() == [3, 3]
    assert position_ids_from_mask(left).tolist() == [[0, 0, 1, 2], [0, 0, 0, 1]]
    with pytest.raises(ValueError, match="all padding"):
        last_token_index(torch.tensor([[0, 0]]))


def test_token_logprobs_match_log_softmax_and_ignore_masked():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[1, 4, IGNORE_INDEX], [0, IGNORE_INDEX, 2]])
    out = token_logprobs(logits, labels)
    expected = logits.log_softmax(-1)
    assert out[0, 1] == pytest.approx(expected[0, 1, 4].item(), abs=1e-6)
    assert out[1, 2] == pytest.approx(expected[1, 2, 2].item(), abs=1e-6)
    assert out[0, 2] == 0 and out[1, 1] == 0


def test_atomic_dir_keeps_the_old_directory_on_failure(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash mid-save")
    assert (target / "a.txt").read_text() == "first"
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporaries left


def test_causal_lm_round_trip_is_safetensors_and_exact(tmp_path, make_model, tokenizer):
    model = make_model(seed=3).eval()
    save_causal_lm(model, tmp_path / "lm", tokenizer)
    assert (tmp_path / "lm" / "model.safetensors").exists()
    assert not list((tmp_path / "lm").glob("*.bin"))
    loaded = load_causal_lm(tmp_path / "lm").eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(model(ids).logits, loaded(ids).logits)
    assert load_tokenizer(tmp_path / "lm").encode("the hotel") == tokenizer.encode("the hotel")


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_causal_lm(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_causal_lm(tmp_path / "empty")


def test_tokenizer_is_byte_level_and_validates_size(tokenizer):
    text = " the hotel was great. ünïcode ✓"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["a b c"], vocab_size=100)


def test_too_long_input_is_named(make_model):
    from embodied_rl.llm.models import causal_lm_forward

    model = make_model()
    n = model.config.max_position_embeddings + 1
    ids = torch.ones(1, n, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds the model's"):
        causal_lm_forward(model, ids, torch.ones_like(ids))
