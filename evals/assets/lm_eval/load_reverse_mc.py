"""Loads reverse_mc.jsonl for the local lm-eval task ladder_reverse_mc.yaml (lm-eval calls
`load` through the YAML's `custom_dataset`), relative to this file rather than the cwd."""

from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def load(**_metadata) -> datasets.DatasetDict:
    return datasets.load_dataset("json", data_files={"test": str(HERE / "reverse_mc.jsonl")})
