"""regref.pruning against torch.nn.utils.prune (the peer), brute force and Monte Carlo.

Oracles: ``torch.nn.utils.prune.global_unstructured`` / ``l1_unstructured`` /
``ln_structured`` on tiny ``nn.Linear`` and ``nn.Conv2d`` modules built here only (masks
equal when the scores have no ties; with ties both prune everything below the threshold,
keep everything above it and prune the same number, but torch leaves the choice among
tied entries to ``torch.topk``, while regref prunes the first ones, which a stable sort
written here checks); ``regref.prox.prox_l2`` for the group prox; exhaustive search for
the projection onto the l0 ball and for drop-and-grow; the closed-form hard-concrete
distribution, with Monte Carlo tolerances of 5 standard errors computed from the variance.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as tprune
from conftest import load_kernel

from regref import prox, pruning

F64 = torch.float64


def _modules(seed=0):
    torch.manual_seed(seed)
    mods = [torch.nn.Linear(7, 5).double(), torch.nn.Conv2d(3, 4, 3).double(),
            torch.nn.Linear(6, 3).double()]
    return mods


def _params(mods):
    return {f"m{i}": m.weight.detach().clone() for i, m in enumerate(mods)}


def _stable_oracle(scores, k):
    """Keep-mask that prunes the k smallest, ties by lowest index (stable sort)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[torch.argsort(scores.reshape(-1), stable=True)[:k]] = False
    return keep.reshape(scores.shape)


# --- oracles: torch.nn.utils.prune -----------------------------------------------------------

@pytest.mark.parametrize("amount", [0.0, 0.1, 0.5, 0.8, 0.95])
def test_global_masks_equal_torch_global_unstructured(amount):
    mods = _modules(1)
    ours = pruning.magnitude_masks(_params(mods), amount)
    tprune.global_unstructured([(m, "weight") for m in mods],
                               pruning_method=tprune.L1Unstructured, amount=amount)
    for i, m in enumerate(mods):
        assert torch.equal(ours[f"m{i}"], m.weight_mask.bool())


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.9])
def test_layer_masks_equal_torch_l1_unstructured(amount):
    mods = _modules(2)
    ours = pruning.magnitude_masks(_params(mods), amount, scope="layer")
    for i, m in enumerate(mods):
        tprune.l1_unstructured(m, "weight", amount=amount)
        assert torch.equal(ours[f"m{i}"], m.weight_mask.bool())


@pytest.mark.parametrize("n, dim", [(1, 0), (2, 0), (2, 1), (float("inf"), 0)])
@pytest.mark.parametrize("amount", [0.25, 0.5, 0.75])
def test_structured_mask_equals_torch_ln_structured(n, dim, amount):
    for m in _modules(3)[:2]:
        ours = pruning.structured_mask(m.weight.detach(), amount, dim=dim, ord=n)
        tprune.ln_structured(m, "weight", amount=amount, n=n, dim=dim)
        assert torch.equal(ours, m.weight_mask.bool())


def test_second_cut_equals_torch_pruning_twice():
    """torch prunes a fraction of the *remaining* weights; regref counts the total."""
    mods = [torch.nn.Linear(8, 4).double(), torch.nn.Linear(4, 4).double()]  # 48 weights
    m1 = pruning.magnitude_masks(_params(mods), 0.5)
    m2 = pruning.magnitude_masks(_params(mods), 0.75, masks=m1)
    for _ in range(2):
        tprune.global_unstructured([(m, "weight") for m in mods],
                                   pruning_method=tprune.L1Unstructured, amount=0.5)
    for i, m in enumerate(mods):
        assert torch.equal(m2[f"m{i}"], m.weight_mask.bool())


def test_ties_same_count_and_threshold_as_torch_and_first_pruned_first():
    g = torch.Generator().manual_seed(4)
    mods = _modules(4)
    for m in mods:  # integer weights in {-2, ..., 2}: many ties
        m.weight.data = torch.randint(-2, 3, m.weight.shape, generator=g).double()
    params = _params(mods)
    ours = pruning.magnitude_masks(params, 0.5)
    tprune.global_unstructured([(m, "weight") for m in mods],
                               pruning_method=tprune.L1Unstructured, amount=0.5)
    flat_w = torch.cat([p.reshape(-1) for p in params.values()]).abs()
    flat_o = torch.cat([k.reshape(-1) for k in ours.values()])
    flat_t = torch.cat([m.weight_mask.reshape(-1).bool() for m in mods])
    k = round(0.5 * flat_w.numel())
    t = torch.kthvalue(flat_w, k).values
    for mask in (flat_o, flat_t):
        assert int((~mask).sum()) == k
        assert not mask[flat_w < t].any() and mask[flat_w > t].all()
    assert torch.equal(flat_o, _stable_oracle(flat_w, k))


# --- properties ------------------------------------------------------------------------------

def test_global_mask_is_the_projection_onto_the_l0_ball():
    g = torch.Generator().manual_seed(5)
    w = {"a": torch.randn(3, generator=g, dtype=F64), "b": torch.randn(5, generator=g,
                                                                         dtype=F64)}
    flat = torch.cat([w["a"], w["b"]])
    best = min(itertools.combinations(range(8), 3),
               key=lambda S: float(flat[list(S)].pow(2).sum()))  # cheapest 3 to remove
    m = pruning.magnitude_masks(w, 3 / 8)
    removed = torch.nonzero(~torch.cat([m["a"], m["b"]])).reshape(-1).tolist()
    assert sorted(removed) == sorted(best)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_exact_sparsity_and_idempotent(scope):
    g = torch.Generator().manual_seed(6)
    w = [torch.randn(10, 7, generator=g), torch.randn(13, generator=g)]
    m = pruning.magnitude_masks(w, 0.6, scope=scope)
    n = [t.numel() for t in w]
    if scope == "global":
        assert sum(int((~k).sum()) for k in m) == round(0.6 * sum(n))
    else:
        assert [int((~k).sum()) for k in m] == [round(0.6 * k) for k in n]
    again = pruning.magnitude_masks(pruning.apply_masks(w, m), 0.6, scope=scope)
    assert all(torch.equal(a, b) for a, b in zip(m, again, strict=True))
    assert abs(pruning.mask_sparsity(m) - sum(int((~k).sum()) for k in m) / sum(n)) < 1e-15


def test_batched_equals_one_model_at_a_time():
    g = torch.Generator().manual_seed(7)
    w = {"W1": torch.randn(4, 6, 5, generator=g), "W2": torch.randn(4, 3, 6, generator=g)}
    for scope in ("global", "layer"):
        mb = pruning.magnitude_masks(w, 0.7, scope=scope, batched=True)
        for b in range(4):
            mo = pruning.magnitude_masks({k: v[b] for k, v in w.items()}, 0.7, scope=scope)
            assert all(torch.equal(mb[k][b], mo[k]) for k in w)
    sb = pruning.structured_mask(w["W1"], 0.5, dim=1, batched=True)
    for b in range(4):
        assert torch.equal(sb[b], pruning.structured_mask(w["W1"][b], 0.5, dim=1))


def test_scores_replace_magnitudes_and_numpy_is_accepted():
    w = np.array([[1.0, -2.0], [3.0, 0.5]])
    s = np.array([[4.0, 1.0], [2.0, 3.0]])
    m = pruning.magnitude_masks(w, 0.5, scores=s)
    assert m.tolist() == [[True, False], [False, True]]
    m32 = pruning.magnitude_masks(torch.tensor(w, dtype=torch.float32), 0.5)
    assert m32.dtype == torch.bool and m32.tolist() == [[False, True], [True, False]]


def test_kernel_pastes_alone_and_breaks_ties_by_index():
    kernel = load_kernel(pruning._prune_smallest_kernel)
    g = torch.Generator().manual_seed(8)
    S = torch.randint(0, 4, (5, 40), generator=g).double()
    for k in (0, 1, 17, 40):
        keep = kernel(S, k)
        expected = torch.stack([_stable_oracle(row, k) for row in S])
        assert torch.equal(keep, expected)
        assert torch.equal(keep, pruning._prune_smallest_kernel(S, k))


def test_block_mask_keeps_the_largest_of_each_block():
    g = torch.Generator().manual_seed(18)
    W = torch.randn(6, 16, generator=g, dtype=F64)
    m = pruning.block_mask(W, 2, 4)
    blocks, mb = W.abs().reshape(-1, 4), m.reshape(-1, 4)
    assert bool((mb.sum(1) == 2).all())
    for row, keep in zip(blocks, mb, strict=True):
        assert set(torch.topk(row, 2).indices.tolist()) == set(torch.nonzero(keep).reshape(-1)
                                                               .tolist())
    assert bool(pruning.block_mask(W, 4, 4).all())
    ties = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert pruning.block_mask(ties, 1, 4).tolist() == [False, False, False, True]


# --- group lasso on channels -----------------------------------------------------------------

def test_group_prox_is_prox_l2_on_channels_and_zeroes_small_ones():
    g = torch.Generator().manual_seed(9)
    W = torch.randn(4, 3, 2, 2, generator=g, dtype=F64)  # a conv weight
    for dim in (0, 1):
        out = pruning.group_lasso_prox(W, 1.5, dim=dim)
        rows = W.movedim(dim, 0).reshape(W.shape[dim], -1)
        ref = prox.prox_l2(rows, 1.5, dim=-1).reshape(W.movedim(dim, 0).shape).movedim(0, dim)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        norms = torch.linalg.vector_norm(rows, dim=1)
        zero = out.movedim(dim, 0).reshape(W.shape[dim], -1).abs().sum(1) == 0
        assert torch.equal(zero, norms <= 1.5)
    tau = torch.tensor([0.0, 10.0, 1.0, 2.0], dtype=F64)
    out = pruning.group_lasso_prox(W, tau, dim=0)
    assert torch.equal(out[0], W[0]) and not out[1].any()


def test_group_prox_minimizes_its_objective():
    g = torch.Generator().manual_seed(10)
    W = torch.randn(5, 4, generator=g, dtype=F64)
    P = pruning.group_lasso_prox(W, 0.8)

    def obj(V):
        return 0.5 * (V - W).pow(2).sum() + 0.8 * pruning.group_lasso_penalty(V)

    for _ in range(50):
        V = P + 1e-3 * torch.randn(5, 4, generator=g, dtype=F64)
        assert float(obj(V)) >= float(obj(P)) - 1e-14
    assert abs(float(pruning.group_lasso_penalty(W.T, dim=1))
               - float(torch.linalg.vector_norm(W, dim=1).sum())) < 1e-12


def test_selective_decay_value_and_gradient():
    g = torch.Generator().manual_seed(11)
    w = {"a": torch.randn(6, 4, generator=g, dtype=F64, requires_grad=True),
         "b": torch.randn(9, generator=g, dtype=F64, requires_grad=True)}
    m = pruning.magnitude_masks({k: v.detach() for k, v in w.items()}, 0.7)
    R = pruning.selective_decay(w, 0.7)
    expected = sum(0.5 * (v.detach() * ~m[k]).pow(2).sum() for k, v in w.items())
    assert abs(float(R.detach() - expected)) < 1e-14
    R.backward()
    for k, v in w.items():
        torch.testing.assert_close(v.grad, v.detach() * ~m[k], rtol=0, atol=1e-15)


# --- hard-concrete gates ---------------------------------------------------------------------

def _cdf(x, la, beta=2 / 3, lo=-0.1, hi=1.1):
    """P(z <= x) for 0 <= x < 1: z <= x iff s <= (x - lo)/(hi - lo)."""
    c = (x - lo) / (hi - lo)
    return torch.sigmoid(beta * math.log(c / (1 - c)) - la)


def test_hard_concrete_matches_its_distribution():
    la = torch.tensor([-2.0, 0.0, 1.5], dtype=F64)
    N = 200_000
    z = pruning.hard_concrete_sample(la, sample_shape=(N,),
                                     generator=torch.Generator().manual_seed(12))
    assert z.shape == (N, 3) and z.dtype == F64
    checks = [((z == 0).double().mean(0), 1 - pruning.hard_concrete_l0(la)),
              ((z < 1).double().mean(0), _cdf(1.0 - 1e-300, la))]
    checks += [((z <= x).double().mean(0), _cdf(x, la)) for x in (0.0, 0.25, 0.5, 0.9)]
    for emp, p in checks:
        se = torch.sqrt(p * (1 - p) / N)
        assert bool(((emp - p).abs() <= 5 * se).all()), (emp, p)
    mean_l0 = pruning.hard_concrete_l0(la).sum()
    nz = (z != 0).double().sum(1)
    assert abs(float(nz.mean() - mean_l0)) <= 5 * float(nz.std()) / math.sqrt(N)


def test_hard_concrete_gradients():
    la = torch.tensor([-1.0, 0.3, 2.0], dtype=F64, requires_grad=True)
    torch.autograd.gradcheck(lambda a: pruning.hard_concrete_l0(a, temperature=0.5), (la,))
    torch.autograd.gradcheck(
        lambda a: pruning.hard_concrete_sample(
            a, sample_shape=(4,), generator=torch.Generator().manual_seed(13)), (la,))
    gate = pruning.hard_concrete_gate(torch.tensor([-10.0, 10.0], dtype=F64))
    assert gate.tolist() == [0.0, 1.0]


# --- iterative pruning and sparse training ---------------------------------------------------

def test_iterative_pruning_rewinds_and_reaches_the_sparsity():
    g = torch.Generator().manual_seed(14)
    target = {"a": torch.randn(8, 5, generator=g, dtype=F64),
              "b": torch.randn(20, generator=g, dtype=F64)}
    init = {k: torch.ones_like(v) for k, v in target.items()}
    rewind = {k: 2 * torch.ones_like(v) for k, v in target.items()}
    starts = []

    def train(p, m):
        starts.append({k: v.clone() for k, v in p.items()})
        return {k: target[k] * m[k] for k in p}

    w, m = pruning.iterative_magnitude_pruning(init, train, 0.9, n_rounds=3, rewind=rewind)
    assert len(starts) == 4 and torch.equal(starts[0]["a"], init["a"])
    for s in starts[1:]:  # later rounds restart from the rewinding point, masked
        assert set(torch.unique(s["a"]).tolist()) <= {0.0, 2.0}
    assert int(sum((~v).sum() for v in m.values())) == round(0.9 * 60)
    # with this "training", the cut is one-shot magnitude pruning of the target
    one = pruning.magnitude_masks(target, 0.9)
    assert all(torch.equal(m[k], one[k]) for k in m)
    assert all(torch.equal(w[k], target[k] * one[k]) for k in w)


def test_batched_penalty_and_iterative_pruning_equal_one_model_at_a_time():
    g = torch.Generator().manual_seed(17)
    w = {"a": torch.randn(3, 6, 4, generator=g, dtype=F64),
         "b": torch.randn(3, 9, generator=g, dtype=F64)}
    per = [{k: v[i] for k, v in w.items()} for i in range(3)]
    total = pruning.selective_decay(w, 0.6, batched=True)
    assert abs(float(total - sum(pruning.selective_decay(q, 0.6) for q in per))) < 1e-13
    target = {k: v * 2 + 1 for k, v in w.items()}

    def train(p, m):  # deterministic "training": move the kept weights to the target
        return {k: target[k] * m[k] for k in p}

    _, mb = pruning.iterative_magnitude_pruning(w, train, 0.8, n_rounds=2, batched=True)
    for i, q in enumerate(per):
        t_i = {k: v[i] for k, v in target.items()}
        _, mi = pruning.iterative_magnitude_pruning(q, lambda p, m, t=t_i: {
            k: t[k] * m[k] for k in p}, 0.8, n_rounds=2)
        assert all(torch.equal(mb[k][i], mi[k]) for k in w)


def test_sparse_training_step_is_drop_smallest_grow_largest():
    g = torch.Generator().manual_seed(15)
    w = torch.randn(30, generator=g, dtype=F64)
    m = torch.rand(30, generator=g) < 0.4
    w = w * m
    grad = torch.randn(30, generator=g, dtype=F64)
    w2, m2 = pruning.sparse_training_step({"w": w}, {"w": m}, {"w": grad}, 0.3)
    w2, m2 = w2["w"], m2["w"]
    active = int(m.sum())
    d = round(0.3 * active)
    assert int(m2.sum()) == active
    act = torch.nonzero(m).reshape(-1)
    dropped = act[torch.argsort(w[act].abs(), stable=True)[:d]]
    kept = m.clone()
    kept[dropped] = False
    cand = torch.nonzero(~kept).reshape(-1)
    grown = cand[torch.argsort(-grad[cand].abs(), stable=True)[:d]]
    expect = kept.clone()
    expect[grown] = True
    assert torch.equal(m2, expect)
    assert torch.equal(w2, torch.where(m2 & m, w, torch.zeros_like(w)))


# --- bad input -------------------------------------------------------------------------------

W4 = torch.ones(4, 3)
BAD = [
    (lambda: pruning.magnitude_masks(W4, -0.1), ValueError, "sparsity"),
    (lambda: pruning.magnitude_masks(W4, 1.0), ValueError, "sparsity"),
    (lambda: pruning.magnitude_masks(W4, math.nan), ValueError, "sparsity"),
    (lambda: pruning.magnitude_masks(W4, "half"), ValueError, "sparsity"),
    (lambda: pruning.magnitude_masks(W4, True), ValueError, "sparsity"),
    (lambda: pruning.magnitude_masks({}, 0.5), ValueError, "params"),
    (lambda: pruning.magnitude_masks([], 0.5), ValueError, "params"),
    (lambda: pruning.magnitude_masks(["w"], 0.5), TypeError, "params"),
    (lambda: pruning.magnitude_masks(torch.zeros(0), 0.5), ValueError, "params"),
    (lambda: pruning.magnitude_masks(torch.tensor([1.0, math.nan]), 0.5), ValueError,
     "params"),
    (lambda: pruning.magnitude_masks(W4, 0.5, scope="net"), ValueError, "scope"),
    (lambda: pruning.magnitude_masks(W4, 0.5, scores=torch.ones(3)), ValueError, "scores"),
    (lambda: pruning.magnitude_masks(W4, 0.5, masks=torch.ones(3)), ValueError, "masks"),
    (lambda: pruning.magnitude_masks([W4, torch.ones(3)], 0.5, batched=True), ValueError,
     "params"),
    (lambda: pruning.structured_mask(torch.ones(5), 0.5), ValueError, "weight"),
    (lambda: pruning.structured_mask(W4, 0.5, dim=2), ValueError, "dim"),
    (lambda: pruning.structured_mask(W4, 0.5, ord=0), ValueError, "ord"),
    (lambda: pruning.structured_mask(W4, 1.5), ValueError, "sparsity"),
    (lambda: pruning.block_mask(W4, 2, 2), ValueError, "weight"),
    (lambda: pruning.block_mask(W4, 4, 3), ValueError, "keep"),
    (lambda: pruning.block_mask(W4, 0, 3), ValueError, "keep"),
    (lambda: pruning.block_mask(W4, 1, 2.0), ValueError, "block"),
    (lambda: pruning.apply_masks(W4, torch.ones(2)), ValueError, "masks"),
    (lambda: pruning.mask_sparsity([]), ValueError, "masks"),
    (lambda: pruning.group_lasso_prox(W4, -1.0), ValueError, "tau"),
    (lambda: pruning.group_lasso_prox(W4, torch.ones(3)), ValueError, "tau"),
    (lambda: pruning.group_lasso_prox(W4, 1.0, dim=-3), ValueError, "dim"),
    (lambda: pruning.group_lasso_penalty(torch.ones(3)), ValueError, "weight"),
    (lambda: pruning.selective_decay(W4, 1.0), ValueError, "sparsity"),
    (lambda: pruning.hard_concrete_sample(W4, temperature=0.0), ValueError, "temperature"),
    (lambda: pruning.hard_concrete_sample(W4, limits=(0.1, 1.1)), ValueError, "limits"),
    (lambda: pruning.hard_concrete_l0(W4, limits=(-0.1, 0.9)), ValueError, "limits"),
    (lambda: pruning.hard_concrete_gate(W4, limits=1.0), ValueError, "limits"),
    (lambda: pruning.hard_concrete_sample(W4, generator=1), TypeError, "generator"),
    (lambda: pruning.hard_concrete_l0(torch.tensor([math.inf])), ValueError, "log_alpha"),
    (lambda: pruning.iterative_magnitude_pruning(W4, None, 0.5), TypeError, "train_fn"),
    (lambda: pruning.iterative_magnitude_pruning(W4, lambda p, m: p, 0.5, n_rounds=0),
     ValueError, "n_rounds"),
    (lambda: pruning.iterative_magnitude_pruning(W4, lambda p, m: p, 0.5,
                                                 rewind=torch.ones(2)), ValueError, "rewind"),
    (lambda: pruning.sparse_training_step(W4, W4 > 0, torch.ones(2), 0.5), ValueError,
     "grads"),
    (lambda: pruning.sparse_training_step(W4, W4 > 0, W4, 1.0), ValueError, "sparsity"),
]


@pytest.mark.parametrize("call, error, name", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.gpu
def test_gpu_matches_cpu():
    g = torch.Generator().manual_seed(16)
    w = {"a": torch.randn(300, 200, generator=g), "b": torch.randn(50, generator=g)}
    cpu = pruning.magnitude_masks(w, 0.9)
    gpu = pruning.magnitude_masks({k: v.cuda() for k, v in w.items()}, 0.9)
    assert all(torch.equal(cpu[k], gpu[k].cpu()) for k in w)
    la = torch.randn(100, generator=g)
    z_cpu = pruning.hard_concrete_sample(la, generator=torch.Generator().manual_seed(0))
    z_gpu = pruning.hard_concrete_sample(la.cuda(), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z_gpu.cpu(), z_cpu, rtol=1e-5, atol=1e-6)
