"""Extrapolation Merging (ExMe): fine-tune, extrapolate, merge and evaluate language models."""

__version__ = "0.1.0"
