"""A tiny character-level CLIP tokenizer made in-process.

The real CLIP BPE vocabulary (49k merges) only comes from the hub. The `tiny` engine
and the full-size benchmark need *a* CLIPTokenizer with the real class and the real
77-token layout, not the real vocabulary: this one maps every byte to a token (no
merges), so any prompt tokenizes deterministically and offline.
"""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer
from transformers.models.clip.tokenization_clip import bytes_to_unicode

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def char_vocab() -> dict[str, int]:
    """Every byte symbol, alone and word-final (`</w>`), then BOS/EOS: 514 tokens."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}


def write_char_tokenizer_files(folder: Path) -> Path:
    """Write vocab.json + merges.txt (header only: no merges) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(char_vocab()), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


@lru_cache(maxsize=1)
def _files() -> Path:
    # One temp folder per process; the tokenizer reads its files once at construction.
    return write_char_tokenizer_files(Path(tempfile.mkdtemp(prefix="speakdraw-tok-")))


def char_clip_tokenizer(max_length: int = 77) -> CLIPTokenizer:
    """A CLIPTokenizer over `char_vocab()`, padded to `max_length` like SD's."""
    folder = _files()
    return CLIPTokenizer(
        vocab_file=str(folder / "vocab.json"),
        merges_file=str(folder / "merges.txt"),
        model_max_length=max_length,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=EOS,
    )
