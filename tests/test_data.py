"""Chat data: assistant-only labels, malformed rows named by file and line."""

from __future__ import annotations

import json

import pytest

from training.common.errors import DataError
from training.data.chat_data import IGNORE, check_jsonl, encode_chat
from training.data.synthetic import ASSETS, generate
from training.model.modeling import TINY_TOKENIZER


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_TOKENIZER)


def test_labels_cover_exactly_the_assistant_turns(tok):
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Reverse: a b c"},
        {"role": "assistant", "content": "c b a"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "ok"},
    ]
    ids, labels = encode_chat(tok, msgs, 512)
    targets = [t for t in labels if t != IGNORE]
    decoded = tok.decode(targets)
    assert decoded == "c b a<|im_end|>\nok<|im_end|>\n"
    assert labels[-1] == IGNORE  # nothing is predicted past the document


def test_truncation_keeps_labels_aligned(tok):
    msgs = [
        {"role": "user", "content": "Reverse: a b c"},
        {"role": "assistant", "content": "c b a"},
    ]
    ids, labels = encode_chat(tok, msgs, 16)
    assert len(ids) == len(labels) == 16
    for j in range(15):
        assert labels[j] in (IGNORE, ids[j + 1])


@pytest.mark.parametrize(
    "line,reason",
    [
        ('{"messages": [{"role": "user", "content": "hi"}', "not valid JSON"),
        ('{"messages": [{"role": "robot", "content": "hi"}]}', "role='robot'"),
        ('{"messages": [{"role": "user", "content": 3}]}', "content must be a string"),
        ('{"msgs": []}', "'messages' must be a non-empty list"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
    ],
)
def test_malformed_row_is_named_by_file_and_line(tmp_path, line, reason):
    good = json.dumps(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    )
    path = tmp_path / "data.jsonl"
    path.write_text(f"{good}\n{good}\n{line}\n{good}\n")
    with pytest.raises(DataError, match=rf"{path}:3: .*{reason}"):
        check_jsonl(str(path))


def test_synthetic_splits_are_deterministic_and_disjoint():
    train, heldout = generate()
    shipped = [json.loads(line) for line in open(ASSETS / "reverse_heldout.jsonl")]
    assert shipped == heldout  # the checked-in files are what the generator makes
    prompts = lambda rows: {r["messages"][0]["content"] for r in rows}
    assert not prompts(train) & prompts(heldout)
    for r in heldout[:50]:
        letters = r["messages"][0]["content"].split(": ")[1].split()
        assert r["messages"][1]["content"] == " ".join(reversed(letters))


def test_a_byte_order_mark_is_not_a_json_error_and_columns_count_characters(tmp_path):
    import json as _json

    import pytest as _pytest

    from training.common.errors import DataError
    from training.data.chat_data import iter_jsonl

    row = {"messages": [{"role": "user", "content": "é"}, {"role": "assistant", "content": "a"}]}
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + _json.dumps(row, ensure_ascii=False).encode() + b"\n")
    assert [r for _, r in iter_jsonl(str(bom))] == [row]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "éé", }\n', encoding="utf-8")
    with _pytest.raises(DataError, match=r"bad.jsonl:1: not valid JSON \(.* at column 13\)"):
        list(iter_jsonl(str(bad)))
