"""Experiment tracking: metrics.jsonl, console output and train.log."""
