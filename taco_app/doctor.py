"""What works on this machine, and how it is set up: ``python app.py doctor`` and the web app's Doctor tab.

One builder for both: each action and backend (its model, whether its weights are here, whether it
runs now, the command that fixes it), where tool models run, and every setting with its value
(secrets masked) and where that came from. It loads no model and touches no network.
"""

from __future__ import annotations

from taco_app.settings import Settings, current

CHECK_HEADERS = ("kind", "name", "model", "weights here", "runs now", "fix")
SETTING_HEADERS = ("setting", "value", "from")


def checks() -> list[tuple[str, ...]]:
    """(kind, name, model, weights here, runs now, fix): every action, then every backend."""
    from taco_app.backends import doctor_rows
    from taco_app.tools import default_tools

    rows: list[tuple[str, ...]] = []
    for name, tool in default_tools().tools.items():
        status = tool.status()
        rows.append(("action", name, status.model, status.weights, "yes" if status.ready else "no", status.fix))
    rows += [("backend", *row) for row in doctor_rows()]
    return rows


def settings(values: Settings | None = None) -> list[tuple[str, str, str]]:
    """(setting, value, from) for every ``TACO_*`` setting: default, environment or flag."""
    return (values or current()).rows()


def device() -> str:
    """Where the tool models run: cuda or cpu."""
    from taco_app.weights import MODELS

    return MODELS.device


def fixes(rows: list[tuple[str, ...]]) -> list[str]:
    """The distinct fixes for the actions that do not run now."""
    return sorted({row[5] for row in rows if row[0] == "action" and row[5] and row[4] == "no"})


def text() -> str:
    """The doctor's report as the command line prints it: actions, device, backends, fixes, settings."""
    rows = checks()
    actions, backends = ([(kind, *CHECK_HEADERS[2:]), *(row[1:] for row in rows if row[0] == kind)]
                         for kind in ("action", "backend"))
    parts = [table(actions), f"\ntool models run on: {device()}\n", table(backends)]
    missing = fixes(rows)
    if missing:
        parts.append("to fix what does not run: " + "; ".join(missing))
    parts += ["", table([SETTING_HEADERS, *settings()])]
    return "\n".join(parts) + "\n"


def table(rows: list[tuple[str, ...]]) -> str:
    """Rows as aligned columns, the first row the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
