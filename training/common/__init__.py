"""Shared by every package: the ledger and registry store, errors, atomic and link-safe file
writes, and the one seed rule.
"""
