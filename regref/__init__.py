"""regref: reference implementations of regularizers in PyTorch.

One module per family of regularizers (see the book, "Regularization, executable"):

- :mod:`regref.prox` -- proximal operators shared by every family;
- :mod:`regref.ridge` -- ridge, Tikhonov, kernel ridge and random features;
- :mod:`regref.selection` -- choosing the strength: cross-validation, LOO/GCV, SURE,
  evidence and hypergradients;
- :mod:`regref.sparse` -- lasso, elastic net and group lasso, certified by the duality gap;
- :mod:`regref.lowrank` -- nuclear norm, singular value thresholding, matrix completion,
  spectral norms and orthogonality;
- :mod:`regref.covariance` -- the graphical lasso and total positivity;
- :mod:`regref.noise` -- dropout, input noise, augmentation and quantization noise as
  regularizers;
- :mod:`regref.implicit` -- implicit regularization: early stopping as a spectral filter,
  minimum-norm and minimum-l1 interpolation, max-margin directions, linear stability;
- :mod:`regref.curvature` -- Hessian-vector products, sharpness and per-sample gradients
- :mod:`regref.representation` -- anti-collapse losses (VICReg, Barlow Twins, uniformity),
  spectral diagnostics, sparse activations and latent priors, correct under data
  parallelism;
- :mod:`regref.outputs` -- label smoothing, calibration, temperature scaling, distillation
  and noisy-label regularizers on a classifier's outputs;
- :mod:`regref.transfer` -- regularizing toward a reference: L2-SP, elastic weight
  consolidation with a correct Fisher, Fisher merging and KL to a reference policy;
- :mod:`regref.invariance` -- invariance across environments (IRMv1, V-REx, CORAL, Fishr,
  Hessian alignment) and linear concept erasure (LEACE, INLP);
- :mod:`regref.pruning` -- magnitude and structured pruning masks, group lasso on channels,
  hard-concrete L0 gates, iterative pruning and dynamic sparse training;
  of any loss written with :mod:`torch.func`;
- :mod:`regref.ot` -- entropic (Sinkhorn), exact, quadratic and sparse optimal transport;
- :mod:`regref.tv` -- total variation, deconvolution and plug-and-play for inverse problems.

Every function takes and returns ``torch.Tensor`` (array-likes are converted), keeps
the input's device and dtype, and raises ``ValueError`` on bad input.
"""

from . import (
    covariance,
    curvature,
    implicit,
    invariance,
    lowrank,
    noise,
    ot,
    outputs,
    prox,
    pruning,
    representation,
    ridge,
    selection,
    sparse,
    transfer,
    tv,
)
from ._core import ConvergenceWarning, Info

#: The version of regref (PEP 440), as installed by pip.
__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "Info",
    "covariance",
    "curvature",
    "implicit",
    "invariance",
    "lowrank",
    "noise",
    "ot",
    "outputs",
    "prox",
    "pruning",
    "representation",
    "ridge",
    "selection",
    "sparse",
    "transfer",
    "tv",
    "__version__",
]
