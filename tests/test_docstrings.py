"""numpydoc validation of the public API: every public function documents its parameters
and return value and has an Examples section (which ``make test`` runs as a doctest)."""

import importlib
import inspect

import pytest

import regref

numpydoc_validate = pytest.importorskip("numpydoc.validate")

# Every family module the package exports (a new module is checked without being listed).
MODULES = sorted(n for n in regref.__all__ if inspect.ismodule(getattr(regref, n)))
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


def test_every_module_is_in_the_api_appendix():
    """book/_tools/api_page.py maps each module to its chapter; a module missing there
    would be missing from the API appendix."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "book" / "_tools" / "api_page.py"
    spec = importlib.util.spec_from_file_location("api_page", path)
    api_page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(api_page)
    assert set(MODULES) <= set(api_page.MODULES), set(MODULES) - set(api_page.MODULES)
