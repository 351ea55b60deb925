"""Accounting: the job ledger, the GPU-hour budget, team members, and recording direct training
runs.
"""
