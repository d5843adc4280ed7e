"""Evaluating a checkpoint on a benchmark: data, scoring, runs and reports."""
