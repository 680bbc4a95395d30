"""numpydoc validation of the public API: every public function documents its parameters
and return value and has an Examples section (which ``make test`` runs as a doctest)."""

import importlib

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

MODULES = ["covariance", "lowrank", "ot", "prox", "representation", "ridge", "selection",
           "sparse", "tv"]
# GL08 no docstring, SS01 no summary, PR01 a parameter undocumented, PR02 a documented
# parameter that does not exist, RT01 no Returns section, EX01 no Examples section.
CHECKS = {"GL08", "SS01", "PR01", "PR02", "RT01", "EX01"}


def _public():
    for mod in MODULES:
        m = importlib.import_module(f"regref.{mod}")
        for name in m.__all__:
            obj = getattr(m, name)
            if callable(obj) and getattr(obj, "__module__", "").startswith("regref"):
                yield f"regref.{mod}.{name}"


@pytest.mark.parametrize("path", sorted(_public()))
def test_numpydoc(path):
    errors = [f"{code}: {msg}" for code, msg in numpydoc_validate.validate(path)["errors"]
              if code in CHECKS]
    assert not errors, "\n".join(errors)
