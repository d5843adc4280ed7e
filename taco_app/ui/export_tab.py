"""The Export tab: stored sessions as training data, counted as the filters change, downloaded as a zip.

The export itself is :func:`taco_app.store.export.export`, the same as ``python app.py export``.
Its files are written to a work folder in the app's private temporary folder and zipped into Gradio's
cache, from where the page downloads the zip; each browser tab keeps only its latest zip.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr

from taco_app.store.export import FORMATS, RATINGS, REASONS, export
from taco_app.ui import render
from taco_app.ui.live import owner
from taco_app.ui.scratch import LatestFolders
from taco_app.ui.studio import Studio


def build(studio: Studio) -> None:
    """The Export tab's components and events (call inside a ``gr.Tab``)."""
    with gr.Row():
        fmt = gr.Radio(list(FORMATS), value=list(FORMATS)[0], label="Format", elem_id="export-format")
        rating = gr.Radio(["any", *RATINGS], value="any", label="Rating")
        corrected = gr.Checkbox(label="Only corrected sessions")
        since = gr.Textbox(label="Since (YYYY-MM-DD)", placeholder="any date")
        # A format's own option (trl-dpo's pairs), shown while that format is chosen.
        pairs = list(dict.fromkeys(v for f in FORMATS.values() for v in f.options.get("pair", ())))
        pair = gr.Radio(pairs, value=pairs[0] if pairs else None, visible=_takes_pair(list(FORMATS)[0]),
                        label="Pairs: the two steps, or the rests of the traces", elem_id="export-pair")
    count = gr.Markdown(elem_id="export-count")
    go = gr.Button("Export", variant="primary", elem_id="export-run")
    download = gr.File(label="Download", interactive=False, elem_id="export-file")
    inputs = [fmt, rating, corrected, since, pair]

    def counted(fmt_, rating_, corrected_, since_, pair_=None):
        return _count_text(studio, fmt_, rating_, corrected_, since_, pair_)

    for component in inputs:
        component.change(counted, inputs, count)
    fmt.change(lambda fmt_: gr.update(visible=_takes_pair(fmt_)), fmt, pair)

    zips = LatestFolders()

    def run_export(fmt_, rating_, corrected_, since_, pair_, request: gr.Request):
        work = Path(tempfile.mkdtemp(dir=studio.scratch.exports))  # the exported files, until they are zipped
        try:
            archive = _zip_export(studio, Path(download.GRADIO_CACHE), work, fmt_, rating_, corrected_, since_, pair_)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if request.session_hash:
            zips.replace(owner(request), Path(archive).parent)
        return archive, counted(fmt_, rating_, corrected_, since_, pair_)

    go.click(run_export, inputs, [download, count], api_name="export")


def _takes_pair(fmt: str) -> bool:
    return fmt in FORMATS and "pair" in FORMATS[fmt].options


def _options(fmt: str, rating: str, corrected: bool, since: str | None, pair: str | None = None) -> dict[str, Any]:
    """The page's filters as :func:`~taco_app.store.export.export`'s keyword arguments."""
    return dict(fmt=fmt, rating=None if rating == "any" else rating, corrected_only=bool(corrected),
                since=(since or "").strip() or None, pair=pair if _takes_pair(fmt) else None)


def _count_text(studio: Studio, *filters: Any) -> str:
    """How many stored sessions the filters match, in words (a bad filter is said, not raised)."""
    try:
        result = export(studio.store, None, dry_run=True, **_options(*filters))
    except ValueError as err:
        return f"**Cannot count:** {render.escape_text(err)}"
    text = f"**{result.count}** {result.unit}(s) match."
    if result.reasons:
        text += f" {sum(result.reasons.values())} left out (training rows hold clean targets only):\n" + "\n".join(
            f"- {n} × {REASONS[reason]}" for reason, n in sorted(result.reasons.items()))
    return text


def _zip_export(studio: Studio, cache: Path, work: Path, *filters: Any) -> str:
    """Export into ``work``, zip it into a new folder of Gradio's ``cache``; the zip's path, or gr.Error."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = work / f"taco-{filters[0]}-{stamp}"
    try:
        result = export(studio.store, folder, **_options(*filters))
    except ValueError as err:
        raise gr.Error(str(err))
    if result.count == 0:
        raise gr.Error(f"No {result.unit} matches these filters: nothing to export.")
    # Into Gradio's cache (the app's private temporary folder): served as it is, with no second copy.
    cache.mkdir(parents=True, exist_ok=True)
    served = Path(tempfile.mkdtemp(prefix="export-", dir=cache))
    archive = shutil.make_archive(str(served / folder.name), "zip", root_dir=folder)
    gr.Info(result.summary(filters[0]).capitalize() + ".")
    return archive

