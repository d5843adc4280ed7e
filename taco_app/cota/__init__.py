"""The CoTA protocol: action registry, prompt builder, parser, events and the step loop.

Pure Python: nothing here imports torch or gradio.
"""
