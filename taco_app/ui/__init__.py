"""The web UI. ``render`` and ``overlays`` turn a session's events into plain chat messages and
pictures (no gradio import, tested without a server); the Gradio app only wires them to components."""
