"""Eval tasks: generation, the IFEval-lite and synthetic tasks, lm-eval harness tasks, the shipped
assets, and decontamination.
"""
