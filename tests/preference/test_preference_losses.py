"""Preference losses against hand-computed numbers, and DPO against TRL's own code."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from embodied_rl.preference import bradley_terry_loss, cpl_loss, cpl_ranked_loss, dpo_loss


def _softplus(x: float) -> float:  # -log sigmoid(-x)
    return math.log1p(math.exp(x))


# ---------------------------------------------------------------------- Bradley-Terry
def test_bradley_terry_zero_gap_is_log2():
    r = torch.tensor([0.3, -1.0])
    assert bradley_terry_loss(r, r).item() == pytest.approx(math.log(2))


def test_bradley_terry_hand_computed_with_and_without_margin():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    # gaps 1 and -1: -log sigmoid(1) = softplus(-1), -log sigmoid(-1) = softplus(1)
    expected = [_softplus(-1.0), _softplus(1.0)]
    assert bradley_terry_loss(chosen, rejected, reduction="none").tolist() == pytest.approx(
        expected
    )
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(sum(expected) / 2)
    assert bradley_terry_loss(chosen, rejected, reduction="sum").item() == pytest.approx(
        sum(expected)
    )
    # a per-pair margin [1, 0] shifts the first gap to 0 (log 2)
    with_margin = bradley_terry_loss(
        chosen, rejected, margin=torch.tensor([1.0, 0.0]), reduction="none"
    )
    assert with_margin.tolist() == pytest.approx([math.log(2), _softplus(1.0)])
    # a scalar margin raises the loss of every pair
    assert (
        bradley_terry_loss(chosen, rejected, margin=0.5).item()
        > bradley_terry_loss(chosen, rejected).item()
    )


def test_bradley_terry_rejects_bad_shapes_and_reduction():
    with pytest.raises(ValueError, match="shapes must match"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="reduction='avg'"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(3), reduction="avg")


# ---------------------------------------------------------------------- DPO: hand-computed
def test_dpo_zero_margin_is_log2():
    logps = torch.zeros(4)
    loss, chosen, rejected = dpo_loss(logps, logps, logps, logps, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    assert chosen.tolist() == [0.0] * 4 and rejected.tolist() == [0.0] * 4


def test_dpo_variants_hand_computed():
    # policy chosen -1, rejected -3; reference chosen -2, rejected -2:
    # chosen log-ratio 1, rejected log-ratio -1, h = 2, beta = 0.5 -> beta h = 1
    args = (torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))
    sigmoid, chosen, rejected = dpo_loss(*args, beta=0.5)
    assert sigmoid.item() == pytest.approx(_softplus(-1.0))
    assert chosen.item() == pytest.approx(0.5) and rejected.item() == pytest.approx(-0.5)
    cdpo, _, _ = dpo_loss(*args, beta=0.5, label_smoothing=0.2)
    assert cdpo.item() == pytest.approx(0.8 * _softplus(-1.0) + 0.2 * _softplus(1.0))
    ipo, _, _ = dpo_loss(*args, beta=0.5, loss_type="ipo")
    assert ipo.item() == pytest.approx((2.0 - 1.0) ** 2)  # (h - 1/(2 beta))^2
    hinge, _, _ = dpo_loss(*args, beta=0.25, loss_type="hinge")
    assert hinge.item() == pytest.approx(0.5)  # relu(1 - 0.25 * 2)


def test_dpo_rewards_are_detached_and_loss_has_gradient():
    policy_chosen = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss, chosen, _ = dpo_loss(policy_chosen, torch.zeros(2), torch.zeros(2), torch.zeros(2))
    loss.backward()
    assert not chosen.requires_grad
    # raising the chosen log-prob lowers the loss
    assert (policy_chosen.grad < 0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss_type": "kto"}, "loss_type='kto'"),
        ({"beta": 0.0}, "beta=0.0"),
        ({"label_smoothing": 0.5}, "label_smoothing=0.5"),
        ({"loss_type": "ipo", "label_smoothing": 0.1}, "applies to loss_type='sigmoid'"),
    ],
)
def test_dpo_rejects_bad_arguments(kwargs, match):
    z = torch.zeros(2)
    with pytest.raises(ValueError, match=match):
        dpo_loss(z, z, z, z, **kwargs)


# ---------------------------------------------------------------------- DPO: against TRL
def _trl_dpo_loss(
    chosen, rejected, ref_chosen, ref_rejected, beta, loss_type, label_smoothing=0.0, n_tokens=1
):
    """Run TRL's ``DPOTrainer._compute_loss`` on given log-probabilities.

    The method needs a model and an accelerator only to produce per-token log-probs and to
    gather metrics, so it runs unbound on a stand-in ``self`` whose model returns the
    log-probs we choose (each sequence's total split evenly over ``n_tokens`` completion
    tokens) and whose reference log-probs are precomputed. Every line of TRL's loss maths runs
    as released.
    """
    from trl.trainer.dpo_trainer import DPOTrainer

    batch = chosen.shape[0]
    logps = torch.cat([chosen, rejected]).double()  # TRL's batch is [chosen, rejected]
    per_token = (logps / n_tokens).unsqueeze(1).expand(2 * batch, n_tokens)

    def model(**kwargs):
        zeros = torch.zeros(2 * batch, n_tokens, dtype=torch.float64)
        return SimpleNamespace(
            log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool()
        )

    accelerator = SimpleNamespace(device="cpu", gather=lambda t: t, gather_for_metrics=lambda t: t)
    stand_in = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=accelerator,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    # a one-token prompt followed by n_tokens completion tokens
    completion_mask = torch.cat(
        [torch.zeros(2 * batch, 1), torch.ones(2 * batch, n_tokens)], dim=1
    ).long()
    inputs = {
        "input_ids": torch.zeros_like(completion_mask),
        "attention_mask": torch.ones_like(completion_mask),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen.double(),
        "ref_rejected_logps": ref_rejected.double(),
    }
    loss = DPOTrainer._compute_loss(stand_in, model, inputs, return_outputs=False)
    metrics = stand_in._metrics["train"]
    return loss, metrics["rewards/chosen"][0], metrics["rewards/rejected"][0]


def _random_logps(seed: int, batch: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [-torch.rand(batch, generator=g, dtype=torch.float64) * 50 for _ in range(4)]


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_matches_trl(loss_type, beta):
    logps = _random_logps(seed=len(loss_type) + int(10 * beta))
    ours, chosen, rejected = dpo_loss(*logps, beta=beta, loss_type=loss_type)
    theirs, trl_chosen, trl_rejected = _trl_dpo_loss(*logps, beta=beta, loss_type=loss_type)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    assert chosen.mean().item() == pytest.approx(trl_chosen, abs=1e-6)
    assert rejected.mean().item() == pytest.approx(trl_rejected, abs=1e-6)


def test_ipo_matches_trl_length_normalisation_with_averaged_logps():
    # TRL divides IPO's log-ratios by the completion length; ours does so when given averages
    n_tokens = 7
    logps = _random_logps(seed=3)
    ours, _, _ = dpo_loss(*[x / n_tokens for x in logps], beta=0.1, loss_type="ipo")
    theirs, _, _ = _trl_dpo_loss(*logps, beta=0.1, loss_type="ipo", n_tokens=n_tokens)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_conservative_dpo_matches_trl():
    # TRL 1.16's "sigmoid" ignores label_smoothing; its "aot" loss is the label-smoothed
    # sigmoid applied after sorting the batch, so with one pair at a time it is exactly cDPO.
    logps = _random_logps(seed=7, batch=5)
    ours, _, _ = dpo_loss(*logps, beta=0.1, label_smoothing=0.2, reduction="none")
    for i in range(5):
        one_pair = [x[i : i + 1] for x in logps]
        theirs, _, _ = _trl_dpo_loss(*one_pair, beta=0.1, loss_type="aot", label_smoothing=0.2)
        assert ours[i].item() == pytest.approx(theirs.item(), abs=1e-6)


# ---------------------------------------------------------------------- CPL
def test_cpl_hand_computed():
    # segment a: log-probs sum -2, segment b: sum -6; alpha 0.5 -> S_a = -1, S_b = -3
    logp_a = torch.tensor([[-1.0, -1.0]])
    logp_b = torch.tensor([[-4.0, -2.0]])
    lam = 0.5
    a_wins = _softplus(-(-1.0 - lam * -3.0))  # -log sigmoid(S_a - lam S_b) = -log sigmoid(0.5)
    b_wins = _softplus(-(-3.0 - lam * -1.0))  # -log sigmoid(-2.5)
    for label, expected in [(1.0, a_wins), (0.0, b_wins), (0.5, 0.5 * (a_wins + b_wins))]:
        loss = cpl_loss(logp_a, logp_b, torch.tensor([label]), alpha=0.5, conservative_lambda=lam)
        assert loss.item() == pytest.approx(expected)


def test_cpl_unbiased_equal_scores_give_log2():
    logp = torch.full((3, 4), -0.7)
    loss = cpl_loss(logp, logp, torch.ones(3), conservative_lambda=1.0)
    assert loss.item() == pytest.approx(math.log(2))


def test_cpl_gradient_raises_preferred_segment_likelihood():
    logp_a = torch.full((2, 5), -1.0, requires_grad=True)
    logp_b = torch.full((2, 5), -1.0, requires_grad=True)
    cpl_loss(logp_a, logp_b, torch.ones(2)).backward()
    assert (logp_a.grad < 0).all() and (logp_b.grad > 0).all()


def test_cpl_rejects_bad_inputs():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="labels must be"):
        cpl_loss(z, z, torch.ones(3))
    with pytest.raises(ValueError, match="conservative_lambda=0.0"):
        cpl_loss(z, z, torch.ones(2), conservative_lambda=0.0)
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        cpl_loss(torch.zeros(2), torch.zeros(2), torch.ones(2))


def test_cpl_ranked_with_two_segments_equals_pairwise():
    g = torch.Generator().manual_seed(0)
    logp_a, logp_b = -torch.rand(6, 8, generator=g), -torch.rand(6, 8, generator=g)
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]] * 2)
    labels = torch.tensor([1.0, 0.0, 0.5] * 2)
    ranked = cpl_ranked_loss(torch.stack([logp_a, logp_b], dim=1), scores, reduction="none")
    pairwise = cpl_loss(logp_a, logp_b, labels, reduction="none")
    assert torch.allclose(ranked, pairwise)


def test_cpl_ranked_three_segments_is_mean_over_pairs():
    g = torch.Generator().manual_seed(1)
    logps = -torch.rand(1, 3, 4, generator=g)
    scores = torch.tensor([[0.0, 5.0, 1.0]])  # order: 1 > 2 > 0
    expected = (
        cpl_loss(logps[:, 0], logps[:, 1], torch.tensor([0.0]))
        + cpl_loss(logps[:, 0], logps[:, 2], torch.tensor([0.0]))
        + cpl_loss(logps[:, 1], logps[:, 2], torch.tensor([1.0]))
    ) / 3
    assert cpl_ranked_loss(logps, scores).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="scores must be"):
        cpl_ranked_loss(logps, torch.zeros(1, 2))
