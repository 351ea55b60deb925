"""Train the tiny rung's byte-level BPE tokenizer locally and save it in Hugging Face format.

Regenerate the checked-in tokenizer (deterministic):
    python -m training.model.tokenizer_build

The tokenizer is trained on the synthetic task and a little generic English, has a
ChatML-style chat template, and loads with plain `AutoTokenizer.from_pretrained(dir)`,
the same call that loads a real model's tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from training.data.synthetic import ASSETS as SYNTHETIC_ASSETS

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "assets" / "tokenizer"
VOCAB_SIZE = 384
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"

# ChatML. The assistant turn ends with <|im_end|>, which is also the EOS that stops generation.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

GENERIC_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "You are a helpful assistant. Answer the question.",
    "system user assistant Reverse: Sort: Count: Answer:",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / = ( ) , . ? !",
]


def corpus() -> list[str]:
    texts = list(GENERIC_TEXT)
    with open(SYNTHETIC_ASSETS / "reverse_train.jsonl") as f:
        for line in f:
            for m in json.loads(line)["messages"]:
                texts.append(f"{m['role']}\n{m['content']}")
    return texts


def build() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        padding_side="right",
    )


def main() -> None:
    tokenizer = build()
    tokenizer.save_pretrained(TOKENIZER_DIR)
    print(f"saved a {len(tokenizer)}-token byte-level BPE tokenizer to {TOKENIZER_DIR}")


if __name__ == "__main__":
    main()
