"""`ladder plan` counts attention at the document lengths `ladder data inspect` measured (issue
#13 item 5), else at data.max_seq_len, and says which.

    .venv/bin/python -m pytest -q tests/test_doc_lengths.py
"""

from __future__ import annotations

import pytest

from training.config.compose import compose


def test_the_plan_uses_measured_lengths_when_inspect_saved_them_and_says_so(tmp_path):
    from launch.inspection.data_inspect import inspect_data
    from launch.planning.doc_lengths import lengths_path, save_lengths
    from launch.planning.plan import make_plan
    from training.model.flops import train_flops

    overrides = [
        "rung=tiny",
        f"trainer.run_root={tmp_path}",
        "trainer.max_steps=3",
        "data.max_samples=200",
    ]
    cfg = compose(overrides)
    before = make_plan(cfg)
    assert before.doc_tokens == cfg.data.max_seq_len and before.doc_source.startswith(
        "data.max_seq_len"
    )

    report = inspect_data(cfg)
    lengths = report["doc_lengths"]
    assert (
        0 < lengths["mean"] <= lengths["attention_length"] <= lengths["max"] <= cfg.data.max_seq_len
    )
    path = save_lengths(cfg, lengths)
    assert path == lengths_path(cfg) and path.is_file()
    after = make_plan(cfg)
    assert after.doc_tokens == round(lengths["attention_length"]) < cfg.data.max_seq_len
    assert "ladder data inspect" in after.doc_source and str(path) in after.doc_source
    n, L, d = after.matmul_params, cfg.model.num_layers, cfg.model.hidden_size
    s = lengths["attention_length"]
    assert after.flops == pytest.approx(train_flops(n, L, d, [s]) * after.tokens / s)
    assert after.flops < before.flops

    # other data is never planned with these lengths
    other = make_plan(compose([*overrides[:-1], "data.max_samples=100"]))
    assert other.doc_source.startswith("data.max_seq_len")
