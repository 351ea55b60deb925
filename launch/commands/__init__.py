"""The CLI's verbs: one module per verb (train/launch, eval, compare, status, budget, ledger, data,
bench).
"""
