"""regref: reference implementations of regularizers in PyTorch.

One module per family of regularizers (see the book, "Regularization, executable"):

- :mod:`regref.prox` -- proximal operators shared by every family;
- :mod:`regref.ridge` -- ridge, Tikhonov, kernel ridge and random features;
- :mod:`regref.sparse` -- lasso, elastic net and group lasso, certified by the duality gap.

Every function takes and returns ``torch.Tensor`` (array-likes are converted), keeps
the input's device and dtype, and raises ``ValueError`` on bad input.
"""

from . import prox, ridge, sparse
from ._core import ConvergenceWarning, Info

__version__ = "0.1.0"

__all__ = ["ConvergenceWarning", "Info", "prox", "ridge", "sparse", "__version__"]
