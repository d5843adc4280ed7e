"""Keyboard shortcuts for the Review tab: judge a session without reaching for the mouse.

The script (:data:`SCRIPT`, run once when the page loads: ``launch(js=...)``) listens for keys on the
whole page, and acts only while the Review tab is shown and the focus is not where text is typed (a
text box, a drop-down, the step editor, anything editable): there ``j`` or ``+`` is text. Each key
clicks a button of the tab by its ``elem_id``, so a key and a click run the same handler on the server.

+ and - are read by the physical key (``event.code``: the key right of 0, or the keypad's), so they
work on any keyboard layout; with Shift they judge the session instead of the step.
"""

from __future__ import annotations

import html
import json

# (keys, what they do): the list ``?`` shows, in this order.
KEYS: list[tuple[str, str]] = [
    ("j / k", "next / previous step"),
    ("J / K", "next session to review / the session before"),
    ("+ (the +/= key, or the keypad's)", "Good step"),
    ("-", "Bad step (the model's fault)"),
    ("Shift and +", "Good answer (the session)"),
    ("Shift and -", "Bad answer (the session)"),
    ("e", "edit the shown step"),
    ("f", "Fork from the shown step"),
    ("?", "show or hide this list"),
]

LIST_ID = "review-keys-list"

# Which button each key clicks: (event.code, Shift held) -> elem_id.
CLICKS: dict[str, str] = {
    "KeyJ": "review-next-step", "Shift+KeyJ": "review-next",
    "KeyK": "review-previous-step", "Shift+KeyK": "review-back",
    "Equal": "rate-step-up", "NumpadAdd": "rate-step-up", "Shift+Equal": "rate-up", "Shift+NumpadAdd": "rate-up",
    "Minus": "rate-step-model", "NumpadSubtract": "rate-step-model",
    "Shift+Minus": "rate-down", "Shift+NumpadSubtract": "rate-down",
    "KeyF": "review-fork",
}
REPEATS = {"KeyJ", "KeyK"}  # held down, these step on; a held rating key rates once
EDITOR = "#review-step-text .cm-content"  # the step editor (CodeMirror)
TAB = "tab-review"

CSS = f"""
#{LIST_ID} {{ border: 1px solid #d4d4d8; border-radius: 6px; padding: 0.4rem 0.8rem; background: #fafafa; }}
#{LIST_ID}[hidden] {{ display: none; }}
#{LIST_ID} kbd {{ font-family: monospace; border: 1px solid #a1a1aa; border-radius: 3px; padding: 0 0.3rem; }}
"""

SCRIPT = """
() => {
  if (window.__tacoReviewKeys) return;
  window.__tacoReviewKeys = true;
  const clicks = %(clicks)s;
  const repeats = new Set(%(repeats)s);
  const shown = (el) => !!el && el.getClientRects().length > 0;
  const typing = (el) => {
    if (!el || el === document.body) return false;
    if (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName)) return true;
    return !!(el.closest && el.closest(".cm-editor, [contenteditable=''], [contenteditable='true']"));
  };
  window.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    if (!shown(document.getElementById(%(tab)s))) return;
    if (typing(event.target) || typing(document.activeElement)) return;
    if (event.key === "?") {
      const list = document.getElementById(%(list)s);
      if (list) list.hidden = !list.hidden;
      event.preventDefault();
      return;
    }
    if (event.code === "KeyE" && !event.shiftKey) {
      const editor = document.querySelector(%(editor)s);
      if (editor) { editor.focus(); event.preventDefault(); }
      return;
    }
    const id = clicks[(event.shiftKey ? "Shift+" : "") + event.code];
    if (!id) return;
    event.preventDefault();
    if (event.repeat && !repeats.has(event.code)) return;
    const button = document.getElementById(id);
    if (button && !button.disabled) button.click();
  }, true);
}
""" % {"clicks": json.dumps(CLICKS), "repeats": json.dumps(sorted(REPEATS)), "tab": json.dumps(TAB),
       "list": json.dumps(LIST_ID), "editor": json.dumps(EDITOR)}


def keys_html() -> str:
    """The list of keys, hidden until ``?`` is pressed."""
    rows = "".join(f"<li><kbd>{html.escape(k)}</kbd> {html.escape(what)}</li>" for k, what in KEYS)
    return (f'<div id="{LIST_ID}" hidden><b>Keys</b> (on this tab, outside text boxes)<ul>{rows}</ul></div>')
