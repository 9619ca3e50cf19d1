"""stepcredit.prm.losses (the torch extra): every loss against its loop oracle in float64,
autograd gradients (gradcheck), hand-computed values, and the invariants and reductions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from reference import prm_losses as ref  # noqa: E402

from stepcredit.prm import PRMError  # noqa: E402
from stepcredit.prm.labels import preference_pairs  # noqa: E402
from stepcredit.prm.losses import (  # noqa: E402
    MADPO_TAU,
    bradley_terry_loss,
    classification_loss,
    dpo_loss,
    implicit_prm_ce_loss,
    implicit_step_rewards,
    madpo_loss,
    madpo_weights,
    regression_loss,
    tpo_adaptive_logratio,
    tpo_listwise_loss,
    trajectory_dpo_loss,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RTOL, ATOL = 1e-9, 1e-12
LOGP = st.sampled_from((0.0, -1.0, -30.0, 5.0)) | st.floats(-40.0, 5.0)
F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def t(x, grad=False):
    return torch.tensor(x, dtype=F64, requires_grad=grad)


def close(got, want):
    got = got.detach() if isinstance(got, torch.Tensor) else got
    want = want.detach() if isinstance(want, torch.Tensor) else want
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=RTOL, atol=ATOL)


def pairs_of(n_min=0, n_max=12):
    return st.integers(n_min, n_max).flatmap(
        lambda n: st.tuples(*(st.lists(LOGP, min_size=n, max_size=n) for _ in range(4)))
    )


# ---------------------------------------------------------------------- DPO
@SETTINGS
@given(data=pairs_of(), beta=st.sampled_from((0.1, 0.05, 1.0, 3.0)))
def test_dpo_equals_oracle(data, beta):
    lc, lr, rc, rr = data
    per, mean = ref.dpo(lc, lr, rc, rr, beta)
    close(dpo_loss(t(lc), t(lr), t(rc), t(rr), beta=beta, reduction="none"), per)
    close(dpo_loss(t(lc), t(lr), t(rc), t(rr), beta=beta), mean)
    close(dpo_loss(t(lc), t(lr), t(rc), t(rr), beta=beta, reduction="sum"), math.fsum(per))


def test_dpo_hand_worked():
    # equal log-ratios: x = 0, ℓ = −log σ(0) = log 2
    z = t([0.0, -3.0])
    close(dpo_loss(z, z, z, z), math.log(2))
    # chosen gains 2 nats over the reference, rejected loses 1: x = 2 − (−1) = 3, β = 0.1:
    # ℓ = −log σ(0.3) = log(1 + e^{−0.3})
    close(dpo_loss(t([-8.0]), t([-11.0]), t([-10.0]), t([-10.0])), math.log1p(math.exp(-0.3)))


@SETTINGS
@given(data=pairs_of(1), beta=st.sampled_from((0.1, 1.0)))
def test_dpo_swap_symmetry(data, beta):
    # swapping chosen and rejected maps x to −x, and ℓ(x) − ℓ(−x) = −βx
    lc, lr, rc, rr = (t(v) for v in data)
    fwd = dpo_loss(lc, lr, rc, rr, beta=beta, reduction="none")
    back = dpo_loss(lr, lc, rr, rc, beta=beta, reduction="none")
    x = (lc - rc) - (lr - rr)
    close(fwd - back, -beta * x)


# ---------------------------------------------------------------------- MADPO
MADPO_GRID = [
    {},
    {"c_max": 4.0, "c_min": 0.25, "lambda_": 0.5, "tau": 2.0},
    {"c_max": 1.5, "c_min": 0.0, "tau": 0.0},
]


@pytest.mark.parametrize("params", MADPO_GRID, ids=str)
@SETTINGS
@given(data=pairs_of(), margins=st.lists(st.sampled_from((0.0, MADPO_TAU, -MADPO_TAU, 1e-9, 800.0)) | st.floats(-20, 20), min_size=12, max_size=12))
def test_madpo_equals_oracle(params, data, margins):
    lc, lr, rc, rr = data
    margin = margins[: len(lc)]
    p = {"beta": 0.1, "c_max": 2.0, "c_min": 0.5, "lambda_": 1.0, "tau": MADPO_TAU, **params}
    per, mean = ref.madpo(lc, lr, rc, rr, margin, p["beta"], p["c_max"], p["c_min"], p["lambda_"], p["tau"])
    close(madpo_loss(t(lc), t(lr), t(rc), t(rr), t(margin), **p, reduction="none"), per)
    close(madpo_loss(t(lc), t(lr), t(rc), t(rr), t(margin), **p), mean)


@SETTINGS
@given(data=pairs_of(), margins=st.lists(st.floats(-20, 20), min_size=12, max_size=12))
def test_madpo_with_unit_weights_is_dpo(data, margins):
    lc, lr, rc, rr = (t(v) for v in data)
    m = t(margins[: lc.shape[0]])
    close(madpo_loss(lc, lr, rc, rr, m, c_max=1.0, c_min=1.0), dpo_loss(lc, lr, rc, rr))


def test_madpo_weight_shape():
    # Δ = 0: w = σ(0)/σ(0) = 1; Δ = τ: c(τ) = 1 so w = 1; Δ ≤ −τ: w = 1 by definition
    w = madpo_weights(t([0.0, MADPO_TAU, -MADPO_TAU, -50.0]))
    close(w, [1.0, 1.0, 1.0, 1.0])
    # c(|Δ|) at Δ = 1 (defaults): k = (2 − 1)/(1 − 0.5) = 2, c = 0.5 + 1.5/(1 + 2e^{1 − τ});
    # hard small positive margin: w = σ(c)/σ(1) > 1 (amplified); easy margin 20: w < 1 (dampened)
    c1 = 0.5 + 1.5 / (1 + 2 * math.exp(1 - MADPO_TAU))
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    w = madpo_weights(t([1.0, 20.0]))
    close(w[0], sig(c1) / sig(1.0))
    assert float(w[0]) > 1.0 and float(w[1]) < 1.0
    assert not madpo_weights(t([1.0], grad=True)).requires_grad


def test_madpo_gradient_only_through_the_policy():
    lc, lr, rc, rr = t([-5.0, -2.0], True), t([-6.0, -1.0], True), t([-5.5, -2.0]), t([-5.5, -1.5])
    m = t([0.7, 12.0], True)
    madpo_loss(lc, lr, rc, rr, m).backward()
    assert m.grad is None and lc.grad is not None
    assert torch.autograd.gradcheck(lambda a, b: madpo_loss(a, b, rc, rr, m.detach()), (lc.detach().requires_grad_(), lr.detach().requires_grad_()))


# ---------------------------------------------------------------------- TPO
@st.composite
def preference_lists(draw):
    b = draw(st.integers(1, 4))
    n = draw(st.integers(1, 5))
    logps = [[draw(LOGP) for _ in range(n)] for _ in range(b)]
    ref_logps = [[draw(LOGP) for _ in range(n)] for _ in range(b)]
    rewards = [[draw(st.sampled_from((0.0, 0.5, 1.0, 0.25)) | st.floats(0, 1)) for _ in range(n)] for _ in range(b)]
    mask = [[draw(st.booleans()) for _ in range(n)] for _ in range(b)]
    return logps, ref_logps, rewards, mask


@pytest.mark.parametrize("variant", ["pairwise", "lambda", "code"])
@SETTINGS
@given(data=preference_lists(), beta=st.sampled_from((0.5, 0.1, 2.0)))
def test_tpo_equals_oracle(variant, data, beta):
    logps, ref_logps, rewards, mask = data
    per, mean = ref.tpo(logps, ref_logps, rewards, mask, beta, variant)
    m = torch.tensor(mask)
    close(tpo_listwise_loss(t(logps), t(ref_logps), t(rewards), m, beta=beta, variant=variant, reduction="none"), per)
    close(tpo_listwise_loss(t(logps), t(ref_logps), t(rewards), m, beta=beta, variant=variant), mean)


@pytest.mark.parametrize("variant", ["pairwise", "lambda"])
@SETTINGS
@given(data=pairs_of(1, 6), beta=st.sampled_from((0.5, 0.1)))
def test_tpo_list_of_two_is_dpo(variant, data, beta):
    # a list (chosen, rejected) with rewards (1, 0) is one DPO pair, in either order
    lc, lr, rc, rr = (t(v) for v in data)
    want = dpo_loss(lc, lr, rc, rr, beta=beta, reduction="none")
    logps, refs = torch.stack([lc, lr], 1), torch.stack([rc, rr], 1)
    rewards = t([[1.0, 0.0]] * lc.shape[0])
    close(tpo_listwise_loss(logps, refs, rewards, beta=beta, variant=variant, reduction="none"), want)
    close(tpo_listwise_loss(logps.flip(1), refs.flip(1), rewards.flip(1), beta=beta, variant=variant, reduction="none"), want)


def test_tpo_code_variant_hand_worked():
    # one list of two, s = (1, 0), y = (1, 0): the 4 ordered (i, j) terms are
    # (0,0), (1,1): −log σ(0) = log 2 each; (0,1): −log σ((1 − 0)·1); (1,0): −log σ((0 − 1)·(−1))
    # L = [2 log 2 + 2 (−log σ(1))] / (2·1); loss = −log σ(β L) with β = 0.5
    L = (2 * math.log(2) + 2 * ref.neg_log_sigmoid(1.0)) / 2
    got = tpo_listwise_loss(t([[1.0, 0.0]]), t([[0.0, 0.0]]), t([[1.0, 0.0]]), variant="code")
    close(got, ref.neg_log_sigmoid(0.5 * L))


@pytest.mark.parametrize("variant", ["pairwise", "lambda", "code"])
def test_tpo_padding_and_order_do_not_matter(variant):
    logps = t([[-3.0, -5.0, -4.0, -9.0]])
    refs = t([[-4.0, -4.5, -4.0, -1.0]])
    rewards = t([[0.9, 0.1, 0.5, 0.0]])
    base = tpo_listwise_loss(logps[:, :3], refs[:, :3], rewards[:, :3], variant=variant)
    padded = tpo_listwise_loss(logps, refs, rewards, torch.tensor([[True, True, True, False]]), variant=variant)
    perm = [2, 0, 1]
    moved = tpo_listwise_loss(logps[:, perm], refs[:, perm], rewards[:, perm], variant=variant)
    close(padded, base)
    close(moved, base)


def test_tpo_lists_without_pairs_are_left_out():
    # list 1 has all rewards tied: no pair, left out of the mean; if no list has a pair, loss = 0
    logps = t([[-1.0, -2.0], [-1.0, -3.0]], True)
    refs = torch.zeros(2, 2, dtype=F64)
    rewards = t([[1.0, 0.0], [0.5, 0.5]])
    close(tpo_listwise_loss(logps, refs, rewards), tpo_listwise_loss(logps[:1], refs[:1], rewards[:1]))
    zero = tpo_listwise_loss(logps, refs, t([[0.5, 0.5], [0.5, 0.5]]))
    assert zero.item() == 0.0
    zero.backward()  # still attached to the graph
    assert logps.grad is not None


@pytest.mark.parametrize("variant", ["pairwise", "lambda", "code"])
def test_tpo_gradcheck(variant):
    logps = t([[-2.0, -3.5, -1.0], [-4.0, -1.5, -2.5]], True)
    refs = t([[-2.5, -3.0, -2.0], [-3.0, -2.0, -2.0]], True)
    rewards = t([[1.0, 0.2, 0.6], [0.0, 0.9, 0.3]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    assert torch.autograd.gradcheck(lambda a, b: tpo_listwise_loss(a, b, rewards, mask, variant=variant), (logps, refs))


@st.composite
def token_lists(draw):
    b, n, tok, h = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    lr = [[[draw(st.floats(-3, 3)) for _ in range(tok)] for _ in range(n)] for _ in range(b)]
    steps = [[[draw(st.integers(-1, 2)) for _ in range(tok)] for _ in range(n)] for _ in range(b)]
    hid = [[[[draw(st.sampled_from((0.0, 1.0)) | st.floats(-2, 2)) for _ in range(h)] for _ in range(tok)] for _ in range(n)] for _ in range(b)]
    return lr, steps, hid


@SETTINGS
@given(data=token_lists())
def test_tpo_adaptive_equals_oracle(data):
    lr, steps, hid = data
    got = tpo_adaptive_logratio(t(lr), torch.tensor(steps, dtype=torch.long), t(hid))
    close(got, ref.tpo_adaptive(lr, steps, hid))


def test_tpo_adaptive_hand_worked():
    # response 0: step 0 tokens [1, 3] (mean 2), step 1 token [4]; response 1: step 0 token [0],
    # step 1 tokens [2, 2] (mean 2). Hidden: response 1's step 0 points the same way as response
    # 0's (cos 1, w 2), its step 1 the opposite way (cos −1, w 0).
    # s_0 = (2·2 + 2·4)/4 = 3 (w = 2 for its own steps); s_1 = (2·0 + 0·2)/2 = 0
    lr = t([[[1.0, 3.0, 4.0], [0.0, 2.0, 2.0]]])
    steps = torch.tensor([[[0, 0, 1], [0, 1, 1]]])
    hid = t([[[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, -1.0], [0.0, -1.0]]]])
    close(tpo_adaptive_logratio(lr, steps, hid), [[3.0, 0.0]])


def test_tpo_adaptive_gradcheck():
    lr = t([[[1.0, -0.5, 0.3, 0.2], [0.4, 0.1, -0.2, 0.7]]], True)
    steps = torch.tensor([[[0, 0, 1, -1], [0, 1, 1, 1]]])
    hid = t([[[[1.0, 0.2], [0.3, 0.5], [0.1, -1.0], [0.0, 0.0]], [[0.5, 0.5], [1.0, -0.3], [0.2, 0.9], [-0.4, 0.1]]]], True)
    assert torch.autograd.gradcheck(lambda a, h: tpo_adaptive_logratio(a, steps, h), (lr, hid))


# ---------------------------------------------------------------------- reward-model losses
@SETTINGS
@given(data=pairs_of())
def test_bradley_terry_equals_oracle(data):
    sc, sr = data[0], data[1]
    per, mean = ref.bradley_terry(sc, sr)
    close(bradley_terry_loss(t(sc), t(sr), reduction="none"), per)
    close(bradley_terry_loss(t(sc), t(sr)), mean)


@SETTINGS
@given(data=pairs_of(1), shift=st.sampled_from((0.0, 1.0, -7.5, 1e3)))
def test_bradley_terry_shift_invariant(data, shift):
    sc, sr = t(data[0]), t(data[1])
    np.testing.assert_allclose(bradley_terry_loss(sc + shift, sr + shift).item(), bradley_terry_loss(sc, sr).item(), rtol=1e-9, atol=1e-9)


def test_bradley_terry_hand_worked():
    # equal scores: log 2; s_c − s_r = 2: log(1 + e^{−2})
    close(bradley_terry_loss(t([1.0, 3.0]), t([1.0, 1.0]), reduction="none"), [math.log(2), math.log1p(math.exp(-2))])


@st.composite
def step_predictions(draw):
    n = draw(st.integers(0, 12))
    pred = [draw(st.floats(-6, 6)) for _ in range(n)]
    label = [draw(st.sampled_from((0.0, 1.0)) | st.floats(0, 1)) for _ in range(n)]
    mask = [draw(st.booleans()) for _ in range(n)]
    return pred, label, mask


@SETTINGS
@given(data=step_predictions())
def test_regression_and_classification_equal_oracle(data):
    pred, label, mask = data
    m = torch.tensor(mask, dtype=torch.bool)
    per, mean = ref.regression(pred, label, mask)
    close(regression_loss(t(pred), t(label), m, reduction="none"), per)
    close(regression_loss(t(pred), t(label), m), mean)
    per, mean = ref.classification(pred, label, mask)
    close(classification_loss(t(pred), t(label), m, reduction="none"), per)
    close(classification_loss(t(pred), t(label), m), mean)


def test_regression_and_classification_hand_worked():
    # regression: (0.9 − 1)² and (0.2 − 0.5)², the third step masked out: (0.01 + 0.09)/2 = 0.05
    m = torch.tensor([True, True, False])
    close(regression_loss(t([0.9, 0.2, 7.0]), t([1.0, 0.5, float("nan")]), m), 0.05)
    # classification: logit 0 with label 1 -> log 2; logit 2 with label 0 -> −log σ(−2) = log(1 + e²)
    close(classification_loss(t([0.0, 2.0]), t([1.0, 0.0])), (math.log(2) + math.log1p(math.exp(2))) / 2)


def test_masked_out_nan_labels_do_not_poison_gradients():
    pred = t([0.3, 0.1], True)
    regression_loss(pred, t([1.0, float("nan")]), torch.tensor([True, False])).backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("fn", [bradley_terry_loss, regression_loss, classification_loss])
def test_reward_model_losses_gradcheck(fn):
    a = t([0.3, -1.2, 2.0], True)
    b = t([0.5, 0.0, 1.0]) if fn is not bradley_terry_loss else t([0.1, 0.4, -0.3], True)
    args = (a, b) if fn is bradley_terry_loss else (a,)
    f = (lambda x, y: fn(x, y)) if fn is bradley_terry_loss else (lambda x: fn(x, b))
    assert torch.autograd.gradcheck(f, args)


# ---------------------------------------------------------------------- implicit PRM
@st.composite
def tokens_in_steps(draw):
    counts = draw(st.lists(st.integers(0, 4), min_size=1, max_size=8))
    offsets = [0]
    for c in counts:
        offsets.append(offsets[-1] + c)
    values = [draw(st.floats(-5, 5)) for _ in range(offsets[-1])]
    return values, offsets


@SETTINGS
@given(data=tokens_in_steps(), beta=st.sampled_from((0.05, 1.0)))
def test_implicit_step_rewards_equal_oracle(data, beta):
    values, offsets = data
    got = implicit_step_rewards(t(values), np.array(offsets), beta=beta)
    close(got, ref.implicit_step_rewards(values, offsets, beta))
    # the step rewards telescope to the outcome reward β Σ_tokens log-ratio
    close(got.sum(), beta * math.fsum(values))


@st.composite
def token_matrix(draw):
    n, tok = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    vals = [[draw(st.floats(-20, 20)) for _ in range(tok)] for _ in range(n)]
    mask = [[draw(st.booleans()) for _ in range(tok)] for _ in range(n)]
    outcome = [draw(st.sampled_from((0.0, 1.0))) for _ in range(n)]
    return vals, mask, outcome


@SETTINGS
@given(data=token_matrix(), beta=st.sampled_from((0.05, 0.5)))
def test_implicit_ce_equals_oracle(data, beta):
    vals, mask, outcome = data
    rows = [[v for v, m in zip(r, mr) if m] for r, mr in zip(vals, mask)]
    per, mean = ref.implicit_ce(rows, outcome, beta)
    m = torch.tensor(mask)
    close(implicit_prm_ce_loss(t(vals), t(outcome), m, beta=beta, reduction="none"), per)
    close(implicit_prm_ce_loss(t(vals), t(outcome), m, beta=beta), mean)
    # the [N] form on the masked sums is the same loss
    sums = t([math.fsum(r) for r in rows])
    close(implicit_prm_ce_loss(sums, t(outcome), beta=beta), mean)


def test_implicit_ce_hand_worked():
    # log-ratio 0: r = 0, ℓ = log 2 for either label; r = β·40 = 2 with l = 1: log(1 + e^{−2});
    # with l = 0: −log(1 − σ(2)) = log(1 + e²)
    close(implicit_prm_ce_loss(t([0.0, 0.0]), t([1.0, 0.0]), reduction="none"), [math.log(2), math.log(2)])
    close(implicit_prm_ce_loss(t([40.0, 40.0]), t([1.0, 0.0]), reduction="none"), [math.log1p(math.exp(-2)), math.log1p(math.exp(2))])


def test_implicit_gradcheck():
    x = t([[0.3, -1.0, 2.0], [1.0, 0.5, -0.5]], True)
    m = torch.tensor([[True, True, False], [True, True, True]])
    assert torch.autograd.gradcheck(lambda a: implicit_prm_ce_loss(a, t([1.0, 0.0]), m, beta=0.5), (x,))
    tok = t([0.3, -1.0, 2.0, 0.7], True)
    assert torch.autograd.gradcheck(lambda a: implicit_step_rewards(a, np.array([0, 1, 1, 4])), (tok,))


# ---------------------------------------------------------------------- OPRL trajectory DPO
@st.composite
def grouped_trajectories(draw):
    lengths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=8))
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    values = [draw(st.floats(-10, 10)) for _ in range(int(offsets[-1]))]
    outcome = [draw(st.sampled_from((0.0, 1.0))) for _ in lengths]
    group = [draw(st.sampled_from(("a", "b"))) for _ in lengths]
    return values, offsets, outcome, group


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
@SETTINGS
@given(data=grouped_trajectories(), beta=st.sampled_from((0.05, 1.0)))
def test_trajectory_dpo_equals_oracle(aggregate, data, beta):
    values, offsets, outcome, group = data
    pairs = preference_pairs(np.array(outcome), np.array(group))
    per, mean = ref.trajectory_dpo(values, offsets.tolist(), pairs.preferred.tolist(), pairs.dispreferred.tolist(), beta, aggregate)
    args = (t(values), offsets, pairs.preferred, pairs.dispreferred)
    close(trajectory_dpo_loss(*args, beta=beta, aggregate=aggregate, reduction="none"), per)
    close(trajectory_dpo_loss(*args, beta=beta, aggregate=aggregate), mean)


@SETTINGS
@given(data=grouped_trajectories())
def test_trajectory_dpo_sum_is_dpo_on_trajectory_log_ratios(data):
    # Σ_t ρ_t = log π_φ(τ) − log π_old(τ): the "sum" form is DPO with the reference folded in
    values, offsets, outcome, group = data
    pairs = preference_pairs(np.array(outcome), np.array(group))
    q = [math.fsum(values[offsets[e]:offsets[e + 1]]) for e in range(len(offsets) - 1)]
    win = t([q[i] for i in pairs.preferred])
    lose = t([q[j] for j in pairs.dispreferred])
    zero = torch.zeros_like(win)
    close(trajectory_dpo_loss(t(values), offsets, pairs.preferred, pairs.dispreferred, beta=0.05),
          dpo_loss(win, lose, zero, zero, beta=0.05))


def test_trajectory_dpo_hand_worked_and_no_pairs():
    # episodes: [1, 3] (success), [−2] (failure); sum: Q = 0.05·4 = 0.2 and −0.1 -> −log σ(0.3);
    # mean: Q = 0.05·2 = 0.1 and −0.1 -> −log σ(0.2)
    x = t([1.0, 3.0, -2.0], True)
    off = np.array([0, 2, 3])
    close(trajectory_dpo_loss(x, off, [0], [1]), ref.neg_log_sigmoid(0.3))
    close(trajectory_dpo_loss(x, off, [0], [1], aggregate="mean"), ref.neg_log_sigmoid(0.2))
    # no pairs (all episodes succeed): loss 0, still backpropagates (as the official code)
    empty = np.zeros(0, dtype=np.int64)
    loss = trajectory_dpo_loss(x, off, empty, empty)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros(3, dtype=F64))


def test_trajectory_dpo_gradcheck():
    x = t([1.0, 3.0, -2.0, 0.5, 0.1], True)
    off = np.array([0, 2, 3, 5])
    for agg in ("sum", "mean"):
        assert torch.autograd.gradcheck(lambda a: trajectory_dpo_loss(a, off, [0, 0, 2], [1, 2, 1], beta=0.5, aggregate=agg), (x,))


@pytest.mark.parametrize(("name", "fn"), [("dpo", dpo_loss), ("bt", bradley_terry_loss)])
def test_pair_losses_gradcheck(name, fn):
    a = t([-1.0, 0.5, 2.0], True)
    b = t([-1.5, 1.0, 0.0], True)
    if name == "dpo":
        c, d = t([-1.2, 0.0, 1.0]), t([-1.0, 0.7, 0.3])
        assert torch.autograd.gradcheck(lambda x, y: fn(x, y, c, d, beta=0.7), (a, b))
    else:
        assert torch.autograd.gradcheck(lambda x, y: fn(x, y), (a, b))


# ---------------------------------------------------------------------- contracts
def test_inputs_are_not_modified():
    lc, lr, rc, rr = t([-1.0, -2.0], True), t([-3.0, -1.0], True), t([-1.5, -2.0]), t([-2.0, -1.0])
    before = [x.detach().clone() for x in (lc, lr, rc, rr)]
    madpo_loss(lc, lr, rc, rr, t([0.5, -9.0])).backward()
    tpo_listwise_loss(torch.stack([lc, lr], 1), torch.stack([rc, rr], 1), t([[1.0, 0.0], [0.0, 1.0]]), variant="lambda")
    for x, y in zip((lc, lr, rc, rr), before):
        assert torch.equal(x.detach(), y)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: dpo_loss(t([0.0]), t([0.0]), t([0.0]), t([0.0]), beta=0.0), "'beta' must be finite and > 0"),
        (lambda: dpo_loss(t([0.0]), t([0.0, 1.0]), t([0.0]), t([0.0])), "same shape"),
        (lambda: dpo_loss([0.0], t([0.0]), t([0.0]), t([0.0])), "must be a torch.Tensor"),
        (lambda: dpo_loss(t([0.0]), t([0.0]), t([0.0]), t([0.0]), reduction="max"), "'reduction'"),
        (lambda: bradley_terry_loss(torch.tensor([1]), torch.tensor([1])), "floating-point"),
        (lambda: madpo_weights(t([0.0]), c_max=0.9), "c_min < 1 < c_max"),
        (lambda: tpo_listwise_loss(t([[0.0]]), t([[0.0]]), t([[0.0]]), variant="listnet"), "'variant'"),
        (lambda: tpo_listwise_loss(t([[0.0]]), t([[0.0]]), t([[0.0]]), torch.tensor([[1]])), "bool"),
        (lambda: classification_loss(t([0.0]), t([2.0])), "must lie in \\[0, 1\\]"),
        (lambda: implicit_prm_ce_loss(t([0.0]), t([0.0]), torch.tensor([True])), "'mask' applies only"),
        (lambda: implicit_step_rewards(t([0.0, 1.0]), [0, 1]), "non-decreasing from 0 to the number of tokens 2"),
        (lambda: trajectory_dpo_loss(t([0.0, 1.0]), np.array([0, 2]), [1], [0]), "episode index 1 at pair 0"),
        (lambda: trajectory_dpo_loss(t([0.0, 1.0]), np.array([0, 1, 1, 2]), [0], [1]), "episode 1 has no steps"),
        (lambda: tpo_adaptive_logratio(t([[[0.0]]]), torch.tensor([[[-2]]]), t([[[[0.0]]]])), ">= -1"),
    ],
)
def test_errors(call, match):
    with pytest.raises(PRMError, match=match):
        call()


def test_importing_the_package_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, stepcredit.prm as p; p.first_error; p.best_of_n; p.PRMError; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
