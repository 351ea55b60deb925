"""Verifiers score a completion against a prompt's ground truth: math answers, IFEval constraints,
exact match.
"""
