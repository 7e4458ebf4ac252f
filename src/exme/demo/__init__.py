"""The embedded demo: synthetic multi-task data with lm-eval task YAMLs, and a tiny base model."""
