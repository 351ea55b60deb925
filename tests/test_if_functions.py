"""open-instruct's IFEval ground truths ({"func_name": ...}) in the ifeval verifier: each function on
a passing and a failing answer, the <think> removal, load-time errors, and a hub-format file.

    .venv/bin/python -m pytest -q tests/test_if_functions.py
"""

from __future__ import annotations

import json

import pytest

from training.common.errors import DataError
from training.config.compose import compose
from training.model.modeling import load_tokenizer
from training.rl.rlvr_data import load_prompts
from training.rl.verifiers.if_functions import IF_FUNCTIONS, call_constraint
from training.rl.verifiers.registry import check_row_verifier, ifeval, verify

# Every argument name the hub rows carry, null where a function does not take it.
NULLS = dict.fromkeys(
    [
        "N",
        "quantifier",
        "end_phrase",
        "keyword_list",
        "word",
        "forbidden_words",
        "letter",
        "i",
        "first_word",
        "postscript_marker",
        "options",
        "section_splitter",
        "original_prompt",
    ]
)


def gt(func_name: str, **args) -> dict:
    return {"func_name": func_name, **NULLS, **args}


# (func_name, its arguments, an answer that passes, one that fails)
CASES = [
    ("verify_keywords", {"keyword_list": ["Cat", "dog"]}, "The cat met a DOG.", "The cat sat."),
    ("verify_keyword_frequency", {"word": "cat", "N": 2}, "Cat and cat, not cats.", "cat cat cat"),
    (
        "validate_forbidden_words",
        {"forbidden_words": ["bad"]},
        "all good here",
        "a Badly made thing",
    ),
    ("verify_letter_frequency", {"letter": "z", "N": 2}, "zig zag", "zig Zag"),
    ("verify_paragraph_count", {"N": 2}, "one\n* * *\ntwo", "one\n* * *\n* * *\ntwo"),
    (
        "validate_word_constraint",
        {"N": 3, "quantifier": "at most"},
        "one two three",
        "one two three four",
    ),
    (
        "validate_word_constraint",
        {"N": 10, "quantifier": "around"},
        " ".join(["w"] * 11),
        " ".join(["w"] * 12),
    ),
    ("verify_sentence_constraint", {"N": 2, "quantifier": "at least"}, "One. Two!", "Just one."),
    (
        "validate_paragraphs",
        {"N": 2, "first_word": "Then", "i": 2},
        "First.\n\nThen more.",
        "First.\n\nAnd more.",
    ),
    ("verify_postscript", {"postscript_marker": "P.S."}, "Hi.\nP.S. bye", "Hi. P.S."),
    ("validate_placeholders", {"N": 2}, "to [name] at [address]", "to [name]"),
    ("verify_bullet_points", {"N": 2}, "* a\n* b", "* a\n* b\n- c"),
    ("validate_title", {}, "<<Joy>>\nA poem", "Joy: a poem"),
    (
        "validate_choice",
        {"options": ["My answer is yes.", "My answer is no."]},
        "My answer is no.",
        "Maybe.",
    ),
    ("validate_highlighted_sections", {"N": 2}, "*one* and *two*", "*one* only"),
    (
        "validate_sections",
        {"N": 2, "section_splitter": "Section"},
        "Section 1 a\nSECTION 2 b",
        "Section 1 a",
    ),
    ("validate_json_format", {}, '{"a": 1}', "{a: 1}"),
    (
        "validate_repeat_prompt",
        {"original_prompt": "Write a poem."},
        "Write a poem. Roses...",
        "A poem: roses",
    ),
    ("validate_two_responses", {}, "yes\n******\nno", "yes\n******\nyes"),
    ("validate_uppercase", {}, "ALL LOUD", "Not loud"),
    ("validate_lowercase", {}, "all quiet", "Not quiet"),
    (
        "validate_frequency_capital_words",
        {"N": 2, "quantifier": "at least"},
        "NASA and ESA",
        "only NASA",
    ),
    (
        "validate_end",
        {"end_phrase": "Any other questions?"},
        "Done. Any other questions?",
        "Any other questions? No.",
    ),
    ("validate_quotation", {}, '"quoted"', 'quoted"'),
    ("validate_no_commas", {}, "no commas here", "one, two"),
]


@pytest.mark.parametrize(
    "name, args, good, bad", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_each_function_passes_and_fails(name, args, good, bad):
    truth = json.dumps(gt(name, **args))  # as the hub stores it: JSON text
    assert check_row_verifier("ifeval", truth, "row") == "ifeval"
    assert ifeval(good, truth) == 1.0 and ifeval(bad, truth) == 0.0


def test_every_function_of_open_instructs_map_is_here_and_tested():
    expected = {  # open_instruct/if_functions.py IF_FUNCTIONS_MAP
        "verify_keywords",
        "verify_keyword_frequency",
        "validate_forbidden_words",
        "verify_letter_frequency",
        "validate_response_language",
        "verify_paragraph_count",
        "validate_word_constraint",
        "verify_sentence_constraint",
        "validate_paragraphs",
        "verify_postscript",
        "validate_placeholders",
        "verify_bullet_points",
        "validate_title",
        "validate_choice",
        "validate_highlighted_sections",
        "validate_sections",
        "validate_json_format",
        "validate_repeat_prompt",
        "validate_two_responses",
        "validate_uppercase",
        "validate_lowercase",
        "validate_frequency_capital_words",
        "validate_end",
        "validate_quotation",
        "validate_no_commas",
    }
    assert set(IF_FUNCTIONS) == expected
    assert {c[0] for c in CASES} == expected - {"validate_response_language"}  # langdetect: below


def test_response_language_uses_langdetect_or_says_it_is_missing():
    truth = {"func_name": "validate_response_language", "language": "en"}
    try:
        import langdetect  # noqa: F401
    except ImportError:
        with pytest.raises(
            DataError, match=r"f.jsonl:4: .*needs langdetect: pip install langdetect"
        ):
            check_row_verifier("ifeval", truth, "f.jsonl:4")
        return
    assert ifeval("This answer is written in plain English words.", truth) == 1.0
    assert ifeval("Diese Antwort ist ganz auf Deutsch geschrieben.", truth) == 0.0
    assert ifeval("12345", truth) == 0.0  # nothing to detect: fails, does not raise


def test_the_thinking_section_is_not_checked_and_an_empty_answer_fails():
    lower = gt("validate_lowercase")
    assert call_constraint("<think>THINK LOUDLY, Then answer</think> all quiet", lower)
    assert not call_constraint("<think>quiet</think> Not Quiet", lower)
    assert call_constraint("<|assistant|><answer>all quiet</answer>", lower)
    assert not call_constraint("<think>a thought</think>   ", gt("validate_no_commas"))
    # ours and theirs in one ground truth: both must hold
    both = [{"type": "max_words", "n": 2}, gt("validate_lowercase")]
    assert (
        ifeval("two words", both) == 1.0
        and ifeval("Two words", both) == 0.0
        and ifeval("a b c", both) == 0.0
    )


@pytest.mark.parametrize(
    "truth, message",
    [
        (gt("validate_haiku"), r"data.jsonl:7: .*unknown func_name 'validate_haiku'; known: \["),
        (
            gt("verify_keyword_frequency", word="cat"),
            (
                r"data.jsonl:7: .*verify_keyword_frequency takes \['word', 'N'\]; "
                r"missing \(null or absent\): \['N'\]"
            ),
        ),
        (
            gt("validate_lowercase", N=3),
            r"data.jsonl:7: .*validate_lowercase takes no arguments; not its arguments: \['N'\]",
        ),
    ],
)
def test_a_bad_func_name_row_is_named_at_load_time(truth, message):
    with pytest.raises(DataError, match=message):
        check_row_verifier("ifeval", json.dumps(truth), "data.jsonl:7")


def test_hub_format_rows_load_and_score(tmp_path):
    """Rows exactly as allenai/RLVR-GSM-MATH-IF-Mixed-Constraints stores them, from a local file."""
    rows = [
        {
            "messages": [
                {
                    "role": "user",
                    "content": "Describe a cat. Your entire response should be in lowercase.",
                }
            ],
            "ground_truth": json.dumps(gt("validate_lowercase")),
            "dataset": "ifeval",
        },
        {
            "messages": [
                {"role": "user", "content": "Name a pet. Include the keywords dog, bone."}
            ],
            "ground_truth": json.dumps(gt("verify_keywords", keyword_list=["dog", "bone"])),
            "dataset": "ifeval",
        },
        {
            "messages": [{"role": "user", "content": "What is 2 + 2?"}],
            "ground_truth": "4",
            "dataset": "gsm8k",
        },
    ]
    path = tmp_path / "rlvr_mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose(
        ["recipe=grpo", "rung=tiny", f"data.train_files=[{path}]", "data.max_seq_len=512"]
    )
    prompts = load_prompts(cfg.data, load_tokenizer(cfg.model), cfg.generator.max_new_tokens)
    assert [p.verifier for p in prompts] == ["ifeval", "ifeval", "gsm8k"]
    score = lambda p, answer: verify(p.verifier, answer, p.ground_truth, p.where)
    assert score(prompts[0], "a small furry animal.") == 1.0 and score(prompts[0], "A cat.") == 0.0
    assert score(prompts[1], "a dog with a bone") == 1.0 and score(prompts[1], "a dog") == 0.0
    assert score(prompts[2], "2 + 2 = 4") == 1.0

    rows[1]["ground_truth"] = json.dumps(gt("verify_everything"))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        DataError, match=r"rlvr_mixed.jsonl:2: .*unknown func_name 'verify_everything'"
    ):
        load_prompts(cfg.data, load_tokenizer(cfg.model), cfg.generator.max_new_tokens)


def test_a_local_copy_loads_by_hub_name(tmp_path, monkeypatch):
    """data.hub_name pointing at a local folder of the hub's files: the `datasets` path, offline."""
    monkeypatch.setattr(
        "datasets.config.HF_DATASETS_CACHE", tmp_path / "cache"
    )  # not the user's cache
    folder = tmp_path / "RLVR-GSM-MATH-IF-Mixed-Constraints"
    folder.mkdir()
    rows = [
        {
            "messages": [{"role": "user", "content": "Answer in lowercase."}],
            "ground_truth": json.dumps(gt("validate_lowercase")),
            "dataset": "ifeval",
        },
        {
            "messages": [{"role": "user", "content": "What is 3 + 4?"}],
            "ground_truth": "7",
            "dataset": "gsm8k",
        },
    ]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose(
        [
            "recipe=grpo",
            "rung=tiny",
            "data=rlvr_mixed",
            f"data.hub_name={folder}",
            "data.max_seq_len=512",
        ]
    )
    prompts = load_prompts(cfg.data, load_tokenizer(cfg.model), cfg.generator.max_new_tokens)
    assert [p.verifier for p in prompts] == ["ifeval", "gsm8k"] and prompts[0].where.endswith(
        "[train] row 0"
    )
    assert verify("ifeval", "<think>Hmm, OK</think>all lowercase", prompts[0].ground_truth) == 1.0
