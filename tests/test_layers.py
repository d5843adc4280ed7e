"""Layers import downward only: each layer is imported alone, in a fresh interpreter, and what it
pulled into ``sys.modules`` is checked against what sits above it.

    cota (protocol) < settings, weights, media, drawing < tools, backends, store < runner, evaluation < ui, cli

A failure names each module that should not be there and the chain of imports that brought it in.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT

# Run in a fresh interpreter: import one module while a finder on sys.meta_path notes, for every
# forbidden module, the chain of modules whose code was running when it was first asked for.
PROBE = r"""
import importlib, json, sys

targets, forbidden = sys.argv[1].split(","), json.loads(sys.argv[2])


def is_forbidden(name):
    return any(name == root or name.startswith(root + ".") for root in forbidden)


chains = {}


class Watch:
    def find_spec(self, name, path=None, target=None):
        if is_forbidden(name) and name not in chains:
            chain, frame = [], sys._getframe(1)
            while frame is not None:
                module = frame.f_globals.get("__name__", "?")
                if not module.startswith(("importlib", "_frozen_importlib")) and module != "__main__":
                    if not chain or chain[-1] != module:
                        chain.append(module)
                frame = frame.f_back
            chains[name] = chain[::-1]
        return None  # only watching: the ordinary finders do the import


sys.meta_path.insert(0, Watch())
for target in targets:
    importlib.import_module(target)
print(json.dumps({name: chains.get(name, []) for name in sorted(sys.modules) if is_forbidden(name)}))
"""

def modules_of(package: str) -> list[str]:
    """Every module of a package on disk, the package first."""
    folder = ROOT.joinpath(*package.split("."))
    names = [".".join(path.relative_to(ROOT).with_suffix("").parts) for path in sorted(folder.rglob("*.py"))]
    return [name.removesuffix(".__init__") for name in names]


# Each module alone: registry, prompt, parser, events, actions, backend, traces; db, queries, export, importer, …
COTA = modules_of("taco_app.cota")
BASE = ["taco_app.settings", "taco_app.weights", "taco_app.media", "taco_app.drawing"]
STORE = modules_of("taco_app.store")

ABOVE_COTA = ["taco_app.tools", "taco_app.backends", "taco_app.store", "taco_app.ui", "taco_app.runner", "taco_app.cli"]
# The protocol is pure Python: no array or model library, no web app, no database.
COTA_FORBIDDEN = [*ABOVE_COTA, "numpy", "torch", "gradio", "sqlalchemy"]
BASE_FORBIDDEN = ABOVE_COTA
STORE_FORBIDDEN = ["taco_app.tools", "taco_app.backends", "taco_app.runner", "taco_app.ui", "taco_app.cli"]
# What sits above the tools and the backends, and above the step loop.
ABOVE_TOOLS = ["taco_app.runner", "taco_app.ui", "taco_app.cli", "gradio"]
ABOVE_RUNNER = ["taco_app.ui", "taco_app.cli", "gradio"]


def imported_by(module: str, forbidden: list[str]) -> dict[str, list[str]]:
    """The forbidden modules that ``import module`` loads, each with the chain of imports behind it.

    ``module`` may name several modules, comma-separated: they are imported one after the other.
    """
    done = subprocess.run([sys.executable, "-c", PROBE, module, json.dumps(forbidden)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"import {module} failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.splitlines()[-1])


def explain(module: str, loaded: dict[str, list[str]]) -> str:
    """One line per top offender (its submodules counted, not listed) with the import chain behind it."""
    tops = [name for name in loaded if not any(name.startswith(other + ".") for other in loaded)]
    lines = [f"import {module.replace(',', ', ')} loaded what its layer must not import:"]
    for top in tops:
        below = sum(name.startswith(top + ".") for name in loaded)
        count = f" (+{below} submodules)" if below else ""
        lines.append(f"  {top}{count}: {' -> '.join(loaded[top] + [top])}")
    return "\n".join(lines)


def check(module: str, forbidden: list[str]) -> None:
    loaded = imported_by(module, forbidden)
    assert not loaded, explain(module, loaded)


@pytest.mark.parametrize("module", COTA)
def test_the_protocol_imports_no_other_layer_and_no_numpy_or_torch(module):
    check(module, COTA_FORBIDDEN)


@pytest.mark.parametrize("module", BASE)
def test_the_base_modules_import_no_layer_above_them(module):
    check(module, BASE_FORBIDDEN)


@pytest.mark.parametrize("module", STORE)
def test_the_store_loads_no_tool_or_backend(module):
    check(module, STORE_FORBIDDEN)


@pytest.mark.parametrize("package", ["taco_app.tools", "taco_app.backends"])
def test_tools_and_backends_import_nothing_above_them(package):
    check(",".join(modules_of(package)), ABOVE_TOOLS)


def test_the_step_loop_imports_no_ui_or_cli():
    check("taco_app.runner", ABOVE_RUNNER)


def test_evaluation_imports_no_ui_or_cli_and_its_heavy_libraries_only_when_used():
    """Eval runs sit beside the step loop; plotting and reading Hugging Face datasets load on first use."""
    check(",".join(modules_of("taco_app.evaluation")), [*ABOVE_RUNNER, "matplotlib", "datasets"])


def test_importing_the_package_loads_no_torch_or_gradio():
    check("taco_app", ["torch", "gradio"])


def test_the_probe_sees_an_import_and_its_chain():
    """The check itself: a layer that does import numpy is caught, with the module that did it."""
    loaded = imported_by("taco_app.media", ["numpy"])
    assert "numpy" in loaded and loaded["numpy"][-1] == "taco_app.media"
    assert "numpy (+" in explain("taco_app.media", loaded)


def test_every_named_module_is_checked():
    named = {"registry", "prompt", "parser", "events", "actions", "backend", "traces"}
    assert {f"taco_app.cota.{m}" for m in named} <= set(COTA)
    assert {f"taco_app.store.{m}" for m in ("db", "queries", "export", "importer")} <= set(STORE)
    assert "taco_app.backends.transformers.loading" in modules_of("taco_app.backends")
