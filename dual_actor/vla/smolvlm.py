"""A SmolVLM folder built locally: the config, a word-level tokenizer and the processor that lerobot 0.4.4's SmolVLA
reads (``vlm_model_name``) with ``AutoConfig`` / ``AutoProcessor.from_pretrained``, offline.

The bench VLA (:mod:`dual_actor.vla.bench`) is trained from scratch on the bench's demos, so it needs no pretrained
SmolVLM: only a folder with its architecture and a tokenizer. The tokenizer is word-level over a fixed word list
(the bench's instructions and commands) carrying SmolVLM's special image tokens; its ids do NOT match the real
SmolVLM tokenizer, which is right for weights trained with it and wrong for pretrained SmolVLM weights. Tests build
their tiny models with the same writer (tests/tiny_models.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

IMAGE_TOKENS = ("<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>")
WORDS = tuple(
    "place pick up assemble open close push pull press put insert turn the a an bolt nut screw drawer door "
    "button lid peg hole cube block to on in into of from red blue green yellow left right top".split()
)


def write_smolvlm_folder(
    dest: str | Path,
    config,
    *,
    words: Sequence[str] = WORDS,
    special_ids: dict[str, int] | None = None,
    pad_id: int = 0,
    unk_id: int = 1,
) -> Path:
    """Write ``config`` (a ``SmolVLMConfig``), a stand-in tokenizer and a processor to ``dest``.

    ``special_ids`` places SmolVLM's image tokens at given ids (default: right after pad/unk); words
    take the next free ids. ``config.image_token_id`` is set to the ``<image>`` id. Every id must be
    < ``config.text_config.vocab_size``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    vocab_size = int(config.text_config.vocab_size)
    vocab = {"<pad>": pad_id, "<unk>": unk_id}
    vocab.update(special_ids or {tok: 2 + i for i, tok in enumerate(IMAGE_TOKENS)})
    taken = set(vocab.values())
    free = (i for i in range(vocab_size) if i not in taken)
    for w in words:
        if w not in vocab:
            vocab[w] = next(free, None)
            if vocab[w] is None:
                raise ValueError(f"vocab_size={vocab_size} is too small for {len(words)} words + special tokens")
    if max(vocab.values()) >= vocab_size or len(set(vocab.values())) != len(vocab):
        raise ValueError(f"token ids must be distinct and < vocab_size={vocab_size}")
    for i in sorted(set(range(vocab_size)) - set(vocab.values())):  # no holes: fill with unused tokens
        vocab[f"<unused_{i}>"] = i
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
            "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>",
        },
    )
    config.image_token_id = vocab["<image>"]
    config.save_pretrained(dest)
    vc = config.vision_config
    image_seq_len = (vc.image_size // vc.patch_size) ** 2 // config.scale_factor**2
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(), tokenizer=tokenizer, video_processor=SmolVLMVideoProcessor(),
        image_seq_len=image_seq_len,
    )
    processor.save_pretrained(dest)
    return dest
