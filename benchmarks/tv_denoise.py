"""TV denoising (ROF): regref's certified ``tv_denoise`` vs scikit-image, at the same objective.

Problem: ``skimage.data.camera()`` resized to ``n x n`` (float64 in [0, 1]) plus Gaussian
noise of standard deviation 0.1, strength ``LAM`` = 0.1; both minimise
``1/2 ||u - f||^2 + LAM TV_iso(u)`` with the same forward differences. Sizes: 256^2, 1024^2
and a batch of 32 images of 256^2 (regref solves the batch in one call; scikit-image loops,
since it would treat a 3-D array as one volume).

Protocol (same objective value). The peer is ``denoise_tv_chambolle(f, weight=LAM,
eps=1e-12, max_num_iter=ITERS)``: exactly ``ITERS`` = 200 iterations of Chambolle's
projection algorithm (the peer a user would call), whose objective ``P_sk`` is the
target. Untimed, the setup solves the problem tightly with regref (relative gap 1e-9),
whose objective ``P_up`` is an upper bound on the optimum ``P*``. The timed regref call is
``tv_denoise(f, LAM, tol=t)`` with ``t = (P_sk - P_up) / P(mean f)``: it stops on its
certified duality gap, and ``P(u) <= P* + gap <= P_sk``, so regref is guaranteed to reach
the peer's objective (it usually goes below it). The compared score is the excess of each
answer's objective over ``P_sk``, relative to ``P_sk`` and clamped at 0: it must be 0 for
regref (exactly) as for the peer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from skimage.data import camera
from skimage.restoration import denoise_tv_chambolle
from skimage.transform import resize

from regref.tv import tv_denoise, tv_norm

from .harness import Case, Variant

NAME = "tv_denoise"
LAM, SIGMA, ITERS = 0.1, 0.1, 200
SIZES = [(256, 1), (1024, 1), (256, 32)]
QUICK_SIZES = [(32, 1), (32, 4)]
SLOW = 10**6  # pixels in a case above which it is timed once, on its warm-up run
NOTE = (f"Both solvers minimise the ROF objective with weight {LAM}; scikit-image runs "
        f"{ITERS} iterations of Chambolle's algorithm, and regref stops on a certified "
        "duality gap that guarantees an objective at most scikit-image's. Cases with "
        f"{SLOW:.0e} pixels or more are timed once.")


@dataclass
class Problem:
    f: np.ndarray        # (n, n) or (B, n, n)
    ft: torch.Tensor
    target: np.ndarray   # scikit-image's objective per image (the peer answer's score)
    tol: float           # regref's relative gap that guarantees reaching it


def objective(f, u) -> np.ndarray:
    """ROF objective per image, float64."""
    u = torch.as_tensor(np.asarray(u) if not isinstance(u, torch.Tensor) else u).double().cpu()
    f = torch.as_tensor(f)
    return (0.5 * ((u - f) ** 2).sum((-2, -1)) + LAM * tv_norm(u)).numpy()


def skimage_tv(d: Problem) -> np.ndarray:
    solve = partial(denoise_tv_chambolle, weight=LAM, eps=1e-12, max_num_iter=ITERS)
    return solve(d.f) if d.f.ndim == 2 else np.stack([solve(x) for x in d.f])


def make_problem(n: int, batch: int, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    img = resize(camera().astype(np.float64) / 255.0, (n, n), anti_aliasing=True)
    f = img + SIGMA * rng.standard_normal((batch, n, n))
    f = f[0] if batch == 1 else f
    ft = torch.as_tensor(f)
    d = Problem(f, ft, np.zeros(0), 0.0)
    target = objective(f, skimage_tv(d))
    upper = objective(f, tv_denoise(ft, LAM, tol=1e-9))
    scale = 0.5 * ((f - f.mean(axis=(-2, -1), keepdims=True)) ** 2).sum(axis=(-2, -1))
    tol = float(np.min((target - upper) / scale))
    if not tol > 0:
        raise RuntimeError("scikit-image reached the optimum: no target to race to")
    return Problem(f, ft, target, tol)


def regref_tv(d: Problem) -> torch.Tensor:
    return tv_denoise(d.ft, LAM, tol=d.tol, max_iter=100_000)


def excess(d: Problem, u) -> np.ndarray:
    """Objective above scikit-image's, relative, clamped at 0 (0 = target reached)."""
    return np.atleast_1d(np.maximum(objective(d.f, u) - d.target, 0.0) / d.target)


def on_device(d: Problem, device: str) -> Problem:
    return Problem(d.f, d.ft.to(device), d.target, d.tol)


def cases(quick: bool = False) -> list[Case]:
    out = []
    for n, batch in QUICK_SIZES if quick else SIZES:
        variants = []
        if torch.cuda.is_available():
            variants = [Variant("cuda fp64", partial(on_device, device="cuda"), regref_tv,
                                tol=1e-5, device="cuda")]
        out.append(Case("tv_denoise", {"n": n, "B": batch}, partial(make_problem, n, batch),
                        regref_tv, {f"scikit-image, {ITERS} iterations": skimage_tv},
                        tol=1e-5, variants=variants, score=excess,
                        repeats=0 if n * n * batch >= SLOW else None))
    return out
