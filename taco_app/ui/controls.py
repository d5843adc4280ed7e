"""Small controls shared by the tabs that show a chain of thought and action.

They act in the browser only (``fn=None`` and a ``js`` function): folding a trace costs the server
nothing and works while a run is still streaming.
"""

from __future__ import annotations

import json

import gradio as gr

COLLAPSE = "Collapse all"
EXPAND = "Expand all"

# Gradio 6.31's Chatbot draws a thought (a message with a metadata title) as
# <div class="thought-group"><div class="title [expanded]" role="button">…</div>…</div>; a click on
# the title folds or unfolds it. The button's own label says which of the two it does next.
_TOGGLE = """
(label) => {
  const collapse = label !== %(expand)s;
  const titles = document.querySelectorAll(%(selector)s);
  for (const title of titles) {
    if (title.classList.contains("expanded") === collapse) title.click();
  }
  return collapse ? %(expand)s : %(collapse)s;
}
"""


def collapse_all(chat: gr.Chatbot) -> gr.Button:
    """A small button that folds every thought of ``chat`` ("Collapse all"), then unfolds them all
    ("Expand all"), in the browser. ``chat`` needs an ``elem_id``."""
    if not chat.elem_id:
        raise ValueError("collapse_all needs a Chatbot with an elem_id")
    button = gr.Button(COLLAPSE, size="sm", variant="secondary", scale=0, min_width=120,
                       elem_id=f"{chat.elem_id}-collapse", elem_classes=["collapse-all"])
    selector = f"#{chat.elem_id} .thought-group > [role=button]"
    js = _TOGGLE % {"selector": json.dumps(selector), "expand": json.dumps(EXPAND), "collapse": json.dumps(COLLAPSE)}
    button.click(None, button, button, js=js, api_name=False, queue=False)
    return button
