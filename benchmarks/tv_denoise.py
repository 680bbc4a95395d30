"""TV denoising (ROF): regref's certified ``tv_denoise`` vs scikit-image, at the same objective.

Problem: ``skimage.data.camera()`` resized to ``n x n`` (float64 in [0, 1]) plus Gaussian
noise of standard deviation 0.1, at two strengths ``lam`` (0.1 and 0.3: light and strong
smoothing); both minimise ``1/2 ||u - f||^2 + lam TV_iso(u)`` with the same forward
differences. Sizes: 256^2, 1024^2, 2048^2 and a batch of 32 images of 256^2 (regref solves
the batch in one call; scikit-image loops, since it would treat a 3-D array as one volume).

Protocol (same objective value). The peer is ``denoise_tv_chambolle(f, weight=lam,
eps=1e-12, max_num_iter=ITERS)``: its defaults except the strength and the stopping rule,
i.e. exactly ``ITERS`` = 200 iterations of Chambolle's projection algorithm (the peer a user
would call), whose objective ``P_sk`` is the target. Untimed, the setup solves the problem
with regref to a certified relative gap of 1e-7, whose objective ``P_up`` is an upper bound
on the optimum ``P*``. The timed regref call is ``tv_denoise(f, lam, tol=t)`` with
``t = (P_sk - P_up) / P(mean f)``: it stops on its certified duality gap, and
``P(u) <= P* + gap <= P_sk``, so regref is guaranteed to reach the peer's objective (it
usually goes below it). The compared score is the excess of each answer's objective over
``P_sk``, relative to ``P_sk`` and clamped at 0: it must be 0 for regref (exactly) as for
the peer.

The regref column is the default call, which compiles the iteration with ``torch.compile``
from 2^22 pixels on (2048^2 here) and runs it eagerly below. Where the other path is worth
seeing (from 1024^2 pixels), it is a variant column: "compiled" (``compile=True``) or
"eager" (``compile=False``). Compilation (10-25 s per process and image shape on a 2-core
CPU) is excluded from every time: the untimed setup and the variant's untimed preparation
run the same call first.
"""

from __future__ import annotations

import warnings
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
SIGMA, ITERS, SETUP_TOL = 0.1, 200, 1e-7
LAMS = (0.1, 0.3)
SIZES = [(256, 1), (1024, 1), (2048, 1), (256, 32)]
QUICK_SIZES = [(32, 1), (32, 4)]
SLOW = 10**6     # pixels in a case above which it is timed once, on its warm-up run
VARIANT = 10**6  # pixels from which the compiled / eager variant column is shown
NOTE = (f"Both solvers minimise the ROF objective at weight lam; scikit-image runs {ITERS} "
        "iterations of Chambolle's algorithm, and regref stops on a certified duality gap "
        "that guarantees an objective at most scikit-image's. The regref column is the "
        "default call (compiled from 2^22 pixels, eager below); 'compiled' and 'eager' "
        "columns force the other path. Compile time (once per process and shape, 10-25 s "
        f"here) is excluded. Cases with {SLOW:.0e} pixels or more are timed once.")


@dataclass
class Problem:
    f: np.ndarray        # (n, n) or (B, n, n)
    ft: torch.Tensor
    lam: float
    target: np.ndarray   # scikit-image's objective per image (the peer answer's score)
    tol: float           # regref's relative gap that guarantees reaching it


def objective(f, u, lam) -> np.ndarray:
    """ROF objective per image, float64."""
    u = torch.as_tensor(np.asarray(u) if not isinstance(u, torch.Tensor) else u).double().cpu()
    f = torch.as_tensor(f)
    return (0.5 * ((u - f) ** 2).sum((-2, -1)) + lam * tv_norm(u)).numpy()


def skimage_tv(d: Problem) -> np.ndarray:
    solve = partial(denoise_tv_chambolle, weight=d.lam, eps=1e-12, max_num_iter=ITERS)
    return solve(d.f) if d.f.ndim == 2 else np.stack([solve(x) for x in d.f])


def make_problem(n: int, batch: int, lam: float, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    img = resize(camera().astype(np.float64) / 255.0, (n, n), anti_aliasing=True)
    f = img + SIGMA * rng.standard_normal((batch, n, n))
    f = f[0] if batch == 1 else f
    ft = torch.as_tensor(f)
    d = Problem(f, ft, lam, np.zeros(0), 0.0)
    target = objective(f, skimage_tv(d), lam)
    upper = objective(f, tv_denoise(ft, lam, tol=SETUP_TOL, max_iter=100_000), lam)
    scale = 0.5 * ((f - f.mean(axis=(-2, -1), keepdims=True)) ** 2).sum(axis=(-2, -1))
    tol = float(np.min((target - upper) / scale))
    if not tol > 0:
        raise RuntimeError("scikit-image reached the optimum: no target to race to")
    return Problem(f, ft, lam, target, tol)


def regref_tv(d: Problem, compile: bool | None = None) -> torch.Tensor:
    return tv_denoise(d.ft, d.lam, tol=d.tol, max_iter=100_000, compile=compile)


def excess(d: Problem, u) -> np.ndarray:
    """Objective above scikit-image's, relative, clamped at 0 (0 = target reached)."""
    return np.atleast_1d(np.maximum(objective(d.f, u, d.lam) - d.target, 0.0) / d.target)


def warmed(d: Problem, compile: bool) -> Problem:
    """Untimed: run the path once (compiling it if asked) before it is timed."""
    with warnings.catch_warnings():   # one iteration does not converge; it need not
        warnings.simplefilter("ignore")
        tv_denoise(d.ft, d.lam, max_iter=1, compile=compile)
    return d


def on_device(d: Problem, device: str) -> Problem:
    d = Problem(d.f, d.ft.to(device), d.lam, d.target, d.tol)
    return warmed(d, True)


def cases(quick: bool = False) -> list[Case]:
    out = []
    for n, batch in QUICK_SIZES if quick else SIZES:
        for lam in LAMS:
            pixels = n * n * batch
            variants = []
            if pixels >= VARIANT:
                default_compiles = pixels >= 2**22
                name = "eager" if default_compiles else "compiled"
                variants.append(Variant(name, partial(warmed, compile=not default_compiles),
                                        partial(regref_tv, compile=not default_compiles),
                                        tol=1e-5))
            if torch.cuda.is_available():
                variants.append(Variant("cuda fp64", partial(on_device, device="cuda"),
                                        regref_tv, tol=1e-5, device="cuda"))
            out.append(Case("tv_denoise", {"n": n, "B": batch, "lam": lam},
                            partial(make_problem, n, batch, lam), regref_tv,
                            {f"scikit-image, {ITERS} iterations": skimage_tv},
                            tol=1e-5, variants=variants, score=excess,
                            repeats=0 if pixels >= SLOW else None))
    return out
