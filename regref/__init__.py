"""regref: reference implementations of regularizers in PyTorch.

One module per family of regularizers (see the book, "Regularization, executable"):

- :mod:`regref.prox` -- proximal operators shared by every family;
- :mod:`regref.ridge` -- ridge, Tikhonov, kernel ridge and random features;
- :mod:`regref.sparse` -- lasso, elastic net and group lasso, certified by the duality gap;
- :mod:`regref.ot` -- entropic (Sinkhorn), exact, quadratic and sparse optimal transport.

Every function takes and returns ``torch.Tensor`` (array-likes are converted), keeps
the input's device and dtype, and raises ``ValueError`` on bad input.
"""

from . import ot, prox, ridge, sparse
from ._core import ConvergenceWarning, Info

__version__ = "0.1.0"

__all__ = ["ConvergenceWarning", "Info", "ot", "prox", "ridge", "sparse", "__version__"]
