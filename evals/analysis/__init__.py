"""Comparing checkpoints: bootstrap confidence intervals, compare tables, the leaderboard and the
HTML report.
"""
