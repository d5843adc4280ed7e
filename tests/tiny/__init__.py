"""Tiny random checkpoints of the real architectures, built locally by the tests."""
