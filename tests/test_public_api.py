"""The top-level package re-exports the documented public API, and every module path the docs name imports
(so a moved module cannot leave a stale path in the docs)."""

import importlib
import re
from pathlib import Path

import pytest

import unikd
import unikd.engine
import unikd.losses


def test_all_names_resolve():
    for name in unikd.__all__:
        assert hasattr(unikd, name), name


def test_losses_are_reexported_from_the_package():
    for name in ("kd_loss", "dkd_loss", "nkd_loss", "uskd_loss", "tfkd_loss", "zipf_ls_loss", "create_loss",
                 "dist_loss", "ttm_loss", "wttm_loss", "abkd_loss", "ctkd_loss", "CTKDTemperature"):
        assert getattr(unikd, name) is getattr(unikd.losses, name)


def test_registry_names_match_documented_methods():
    assert set(unikd.list_losses()) >= {"kd", "dkd", "nkd", "uskd", "tfkd", "zipf_ls", "dist", "ttm", "wttm",
                                        "abkd", "ctkd"}


# ---------------------------------------------------------------------------- documented imports and paths

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "configs" / "README.md",
               *(REPO / "docs").glob("*.md")])
# dotted names in the docs that are not Python paths (the checksum key in safetensors metadata)
NOT_PATHS = {"unikd.sha256"}
_FROM_IMPORT = re.compile(r"from\s+(unikd[\w.]*)\s+import\s+\(?([\w, ]+)")
_DOTTED = re.compile(r"\bunikd(?:\.[A-Za-z_]\w*)+")


def _resolve(dotted: str) -> str | None:
    """None when ``dotted`` names a module or an attribute reachable from one, else why not."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and not exc.name.startswith("unikd"):
                return None  # an optional extra that is not installed here: not this test's business
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return f"{'.'.join(parts[:i])} has no attribute {attr!r}"
            obj = getattr(obj, attr)
        return None
    return "no such module"


def _documented() -> list[tuple[str, str]]:
    """(where, dotted name) for every ``from unikd... import a, b`` and every ``unikd.x.y`` in the docs."""
    found = []
    for path in DOCS:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(REPO)}:{n}"
            for m in _FROM_IMPORT.finditer(line):
                found += [(where, f"{m.group(1)}.{name.split()[0]}") for name in m.group(2).split(",")
                          if name.strip()]
            found += [(where, d) for d in _DOTTED.findall(line) if d not in NOT_PATHS and "__main__" not in d]
    return found


def test_engine_all_names_resolve():
    for name in unikd.engine.__all__:
        assert getattr(unikd.engine, name) is not None, name


def test_the_documented_entry_points_import():
    from unikd import evaluate_checkpoint, load_config, train
    from unikd.engine import evaluate
    from unikd.engine import evaluate_checkpoint as ec
    from unikd.engine import load_config as lc
    from unikd.engine import train as tr
    from unikd.engine.config import Config
    from unikd.engine.config import load_config as lc2

    assert (lc, lc2, tr, ec) == (load_config, load_config, train, evaluate_checkpoint)
    assert callable(evaluate) and isinstance(Config(), Config)


@pytest.mark.parametrize("doc", [p.name for p in DOCS])
def test_every_module_path_in_the_docs_resolves(doc: str):
    refs = [(w, d) for w, d in _documented() if Path(w.split(":")[0]).name == doc]
    broken = [f"{w}: {d} ({why})" for w, d in refs if (why := _resolve(d))]
    assert not broken, "module paths in the docs that do not import:\n" + "\n".join(broken)


def test_the_docs_check_catches_a_stale_path():
    # the check above must be able to fail: a moved module and a missing attribute are reported
    assert _resolve("unikd.engine.trainer") == "unikd.engine has no attribute 'trainer'"
    assert _resolve("unikd.engine.loop.trainer.no_such_name") is not None
    assert _resolve("unikd.engine.loop.trainer.train") is None
