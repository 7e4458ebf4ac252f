"""Evaluation with lm-evaluation-harness, and loading the evaluated model from a folder or a merge
recipe built in memory. Takes plain arguments (paths and numbers), never the pipeline's config."""
