"""Mutation testing: `make mutate` (mutation/run.py); results in docs/testing.md."""
