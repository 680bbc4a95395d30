"""Sphinx extension for the book's site (registered in ``_config.yml``).

1. Each chapter page (a notebook) ends with a short list, "regref functions used on
   this page", of cross-references into the API appendix: the ``regref.<module>.<name>``
   objects its code cells use, found by parsing the code (``from regref import ridge``
   then ``ridge.ridge_path(...)``, ``regref.ridge.ridge_path``, ``from regref.ridge
   import ridge_path``). The references carry ``refwarn`` so that a function missing from
   the appendix fails the ``-W`` build instead of rendering as plain text.
2. Each chapter page offers its source as MyST markdown next to the ``.ipynb`` in the
   theme's download menu: the ``.md`` is written into ``_sources/`` at build time.
3. Repeated inline scripts are dropped from each page (sphinx-thebe's snippet was
   included twice, an uncaught SyntaxError in every page's console).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

PACKAGE = "regref"
LIST_TITLE = "regref functions used on this page"
_MAGIC = re.compile(r"^\s*[%!]")


# --------------------------------------------------------------------------- names used


def _parse(source: str) -> ast.AST | None:
    # IPython magics and shell escapes are not Python: blank them, keep line numbers.
    lines = ["" if _MAGIC.match(line) else line for line in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def regref_names(code_cells: list[str]) -> list[str]:
    """Fully qualified ``regref.*`` names the cells refer to, in order of first use.

    Cells are taken in order, so an alias counts from the cell that imports it on.
    """
    aliases: dict[str, str] = {}  # local name -> dotted regref path it stands for
    found: dict[str, None] = {}
    for source in code_cells:
        tree = _parse(source)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        if alias.asname:
                            aliases[alias.asname] = alias.name
                        else:
                            aliases[PACKAGE] = PACKAGE
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == PACKAGE or node.module.startswith(PACKAGE + "."):
                    for alias in node.names:
                        if alias.name != "*":
                            aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        # A second pass, now that this cell's imports are known, in source order.
        # Whole chains only: in ``ridge.ridge_path`` the inner ``ridge`` is not a use.
        inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        refs = [n for n in ast.walk(tree)
                if isinstance(n, (ast.Attribute, ast.Name)) and id(n) not in inner]
        refs.sort(key=lambda n: (n.lineno, n.col_offset, -n.end_col_offset))
        for node in refs:
            parts = _dotted(node)
            if not parts or parts[0] not in aliases:
                continue
            full = ".".join([aliases[parts[0]], *parts[1:]])
            found.setdefault(full, None)
    return list(found)


def _resolve(full: str) -> tuple[str, str] | None:
    """(role, canonical name) for a documented regref function or class, else None."""
    parts = full.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        owner = obj
        try:
            for attr in parts[split:]:
                owner, obj = obj, getattr(obj, attr)
        except AttributeError:
            return None
        break
    else:
        return None
    if inspect.ismodule(obj) or parts[-1].startswith("_"):
        return None
    if not inspect.ismodule(owner):  # a method or attribute: not listed
        return None
    if inspect.isclass(obj):
        return "class", full
    if callable(obj):
        return "func", full
    return None


def _documented(full: str) -> tuple[str, str] | None:
    """The longest prefix of ``full`` that :func:`_resolve` accepts (``ridge.ridge.__doc__``
    is a use of ``ridge.ridge``)."""
    parts = full.split(".")
    for k in range(len(parts), 2, -1):
        resolved = _resolve(".".join(parts[:k]))
        if resolved is not None:
            return resolved
    return _resolve(full) if len(parts) == 2 else None


# --------------------------------------------------------------------------- doctree


def _code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            src = cell.get("source", "")
            cells.append("".join(src) if isinstance(src, list) else src)
    return cells


def add_used_functions(app: Sphinx, doctree: nodes.document) -> None:
    docname = app.env.docname
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".ipynb":
        return
    refs = []
    for full in regref_names(_code_cells(path)):
        resolved = _documented(full)
        if resolved is not None and resolved not in refs:
            refs.append(resolved)
    if not refs:
        return

    container = nodes.container(classes=["regref-used"])
    container += nodes.rubric(LIST_TITLE, LIST_TITLE)
    para = nodes.paragraph()
    for i, (role, target) in enumerate(refs):
        if i:
            para += nodes.Text(", ")
        label = target[len(PACKAGE) + 1 :] + ("()" if role == "func" else "")
        xref = addnodes.pending_xref(
            "",
            refdomain="py",
            reftype=role,
            reftarget=target,
            refexplicit=False,
            refwarn=True,
            refdoc=docname,
        )
        xref["py:module"] = None
        xref["py:class"] = None
        xref += nodes.literal(label, label, classes=["xref", "py", f"py-{role}"])
        para += xref
    container += para

    # Inside the page's top-level section, after everything else on the page.
    sections = [n for n in doctree.children if isinstance(n, nodes.section)]
    (sections[0] if sections else doctree).append(container)


# --------------------------------------------------------------------------- .md download


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    return "`" * max(3, longest + 1)


def notebook_to_myst(nb: dict) -> str:
    """The notebook as a MyST markdown notebook (jupytext's ``md:myst`` layout), no outputs."""
    kernel = nb.get("metadata", {}).get("kernelspec", {})
    out = [
        "---",
        "jupytext:",
        "  text_representation:",
        "    extension: .md",
        "    format_name: myst",
        "kernelspec:",
        f"  display_name: {kernel.get('display_name', 'Python 3')}",
        f"  language: {kernel.get('language', 'python')}",
        f"  name: {kernel.get('name', 'python3')}",
        "---",
        "",
    ]
    previous = None
    for cell in nb.get("cells", []):
        src = cell.get("source", "")
        src = ("".join(src) if isinstance(src, list) else src).rstrip("\n")
        meta = cell.get("metadata", {}) or {}
        kind = cell.get("cell_type")
        if kind == "code":
            fence = _fence(src)
            out.append(f"{fence}{{code-cell}} ipython3")
            for key, value in meta.items():
                out.append(f":{key}: {json.dumps(value)}")
            if meta:
                out.append("")
            out.extend([src, fence, ""])
        else:
            if previous is not None and previous != "code" or meta:
                out.append("+++" + (f" {json.dumps(meta)}" if meta else ""))
                out.append("")
            if kind == "raw":
                fence = _fence(src)
                out.extend([f"{fence}{{raw-cell}}", src, fence, ""])
            else:
                out.extend([src, ""])
        previous = kind
    return "\n".join(out).rstrip("\n") + "\n"


def add_markdown_download(app: Sphinx, pagename, templatename, context, doctree) -> None:
    if doctree is None or not hasattr(app.builder, "outdir"):
        return
    if pagename not in app.env.all_docs:
        return
    path = Path(app.env.doc2path(pagename))
    if path.suffix != ".ipynb":
        return
    md_rel = f"{pagename}.md"
    target = Path(app.builder.outdir) / "_sources" / md_rel
    target.parent.mkdir(parents=True, exist_ok=True)
    nb = json.loads(path.read_text(encoding="utf-8"))
    target.write_text(notebook_to_myst(nb), encoding="utf-8")

    button = {
        "type": "link",
        "url": f"{context['pathto']('_sources', 1)}/{md_rel}",
        "text": ".md",
        "tooltip": "Download as MyST markdown",
        "icon": "fas fa-file-lines",
        "label": "download-markdown-button",
    }
    for group in context.get("header_buttons", []):
        if group.get("label") == "download-buttons":
            buttons = group["buttons"]
            # after the .ipynb (the source), before the print-to-pdf entry
            at = next(
                (i for i, b in enumerate(buttons) if b.get("label") == "download-pdf-button"),
                len(buttons),
            )
            buttons.insert(at, button)
            return
    logger.warning("regref_site: no download menu on %s to add the .md to", pagename)


def dedupe_inline_scripts(app: Sphinx, pagename, templatename, context, doctree) -> None:
    """Drop repeated inline scripts from the page.

    sphinx-thebe registers its ``const THEBE_JS_URL = ...`` snippet once per read phase,
    and the book's build has two, so every page declared the constant twice: an uncaught
    SyntaxError in the browser console.
    """
    seen = set()
    kept = []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", None) or {}
        body = attributes.get("body")
        if body and not getattr(script, "filename", None):
            if body in seen:
                continue
            seen.add(body)
        kept.append(script)
    if "script_files" in context:
        context["script_files"][:] = kept


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", add_used_functions)
    # after sphinx-book-theme builds its header buttons (priority 501)
    app.connect("html-page-context", add_markdown_download, priority=600)
    app.connect("html-page-context", dedupe_inline_scripts, priority=600)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
