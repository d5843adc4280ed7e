"""Mantis's training data path, as TACO trained with it (see README.md in this folder)."""
