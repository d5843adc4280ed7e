"""The CoTA protocol: the action registry, the prompt builder, the parser, typed actions and events,
and the contracts a model backend and an image store meet (``backend.py``).

Pure Python: nothing here imports torch, numpy, PIL or gradio, nor any other part of the app. The
step loop that drives these is :mod:`taco_app.runner`.
"""
