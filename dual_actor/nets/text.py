"""Command (text) encoders for the refinement actor (Eq. 7's l_rf branch).

Every encoder here has the command-encoder contract of
:class:`dual_actor.nets.refinement.LearnedCommandEncoder`:

- ``vocabulary``: the finite list of command strings, in id order;
- ``ids(commands, device) -> (B,) long``: an unknown command is a clear ``KeyError``;
- ``forward(ids (B,)) -> (B, out_dim)``; ``out_dim``.

The pretrained encoders (:class:`T5CommandEncoder`, :class:`SentenceCommandEncoder`) are frozen:
the vocabulary is finite, so every command is embedded once at construction (batched, under
``torch.no_grad``, model in eval mode) into a ``table`` buffer ``(V, out_dim)`` and ``forward`` is
a row lookup. The trainable projection lives in the refinement actor (``cmd_proj``).

Saving: the table is a persistent buffer, so it is in the policy's ``state_dict``; the language
model itself is *not* a submodule (its weights stay out of the policy file, ``.to()`` does not
move it and no optimizer sees it). :meth:`CommandTableEncoder.reload_config` gives the spec
``{"kind": "table", "out_dim": D, "source": {...}}`` that rebuilds an empty
:class:`CommandTableEncoder` of the right shape; ``load_state_dict`` then fills it. A saved policy
therefore reloads (and acts) without T5 or the sentence model present.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dual_actor.nets.refinement import LearnedCommandEncoder, vocabulary_ids

T5_MODEL_TYPES = ("t5", "mt5")


class CheckpointMismatchError(ValueError):
    """A model folder or Hub id that loads but is not the architecture asked for."""


class CommandTableEncoder(nn.Module):
    """Frozen command encoder backed by a table ``(V, out_dim)``: ``ids (B,) -> (B, out_dim)``.

    The table is a persistent, non-trainable buffer (it is saved with the policy). Built empty
    (``table=None``) it is the reload target of a saved pretrained encoder: ``forward`` raises
    until ``load_state_dict`` has filled ``table``.

    Args:
        vocabulary: command strings in id order (no duplicates).
        out_dim: embedding width D (required when ``table`` is None).
        table: ``(V, D)`` float tensor, row i = embedding of ``vocabulary[i]``; or None.
        source: free-form description of where the table came from (kept in ``reload_config``).

    Raises:
        ValueError: duplicate commands, or a table whose shape does not match.
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        out_dim: int | None = None,
        table: torch.Tensor | None = None,
        source: dict[str, Any] | None = None,
    ):
        super().__init__()
        vocabulary = list(vocabulary)
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("command vocabulary has duplicates")
        if not vocabulary:
            raise ValueError("command vocabulary is empty")
        if table is None and out_dim is None:
            raise ValueError("CommandTableEncoder needs out_dim when no table is given")
        if table is not None:
            if table.ndim != 2 or table.shape[0] != len(vocabulary):
                raise ValueError(f"table must be (V={len(vocabulary)}, D), got {tuple(table.shape)}")
            if out_dim is not None and table.shape[1] != out_dim:
                raise ValueError(f"table width {table.shape[1]} != out_dim {out_dim}")
        self.vocabulary = vocabulary
        self._index = {c: i for i, c in enumerate(vocabulary)}
        self.out_dim = int(table.shape[1] if table is not None else out_dim)
        self.source = dict(source or {})
        self._filled = table is not None
        self.register_buffer(
            "table",
            table.detach().float().clone() if table is not None else torch.zeros(len(vocabulary), self.out_dim),
            persistent=True,
        )

    def ids(self, commands: Sequence[str], device=None) -> torch.Tensor:
        """Command strings -> ids ``(B,)``; an unknown command is a clear ``KeyError``."""
        return vocabulary_ids(self._index, self.vocabulary, commands, device)

    def forward(self, command_ids: torch.Tensor) -> torch.Tensor:
        """``command_ids (B,) long -> (B, out_dim)`` rows of the table (no gradient)."""
        if not self._filled:
            raise RuntimeError(
                "command table is empty: this encoder was built from a reload spec; load the saved "
                "policy state (load_state_dict) before using it"
            )
        return self.table[command_ids]

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Vocabulary strings -> ``(N, out_dim)`` rows; other strings need the model (pretrained kinds)."""
        return self.forward(self.ids(texts, self.table.device))

    def reload_config(self) -> dict[str, Any]:
        """Spec for :func:`build_command_encoder` that rebuilds this encoder without its model."""
        return {"kind": "table", "out_dim": self.out_dim, "source": dict(self.source)}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "table" in state_dict:
            self._filled = True

    def extra_repr(self) -> str:
        return f"vocabulary={len(self.vocabulary)}, out_dim={self.out_dim}, source={self.source}"


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.isabs(name) or Path(name).expanduser().exists()


def _load_pretrained(kind: str, name_or_path: str, load):
    """Run ``load(src)`` with clear errors for a missing folder or an unreachable Hub id."""
    name_or_path = str(name_or_path)
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"{kind} encoder: {path} is not a folder (expected a saved Hugging Face model folder "
                "with config.json, the weights and the tokenizer files)"
            )
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{kind} encoder: {path} has no config.json (not a Hugging Face model folder)")
        return load(str(path))
    try:
        return load(name_or_path)
    except CheckpointMismatchError:
        raise
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0")
        raise OSError(
            f"{kind} encoder: could not load {name_or_path!r} from the Hugging Face Hub or its local cache "
            f"(HF_HUB_OFFLINE={offline}): {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
            f"Without Hub access, download it on a connected machine "
            f"(`huggingface-cli download {name_or_path} --local-dir DIR`), copy DIR here and pass its local path."
        ) from e


def _auto_config(kind: str, src: str):
    """``AutoConfig.from_pretrained(src)``; a folder that is no transformers model -> CheckpointMismatchError."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(src)
    except ValueError as e:
        msg = str(e)
        if "Unrecognized model" in msg:  # transformers lists every model type after this: keep it short
            msg = "its config.json has no transformers 'model_type'"
        raise CheckpointMismatchError(f"{kind} encoder: {src} is not a Hugging Face model folder: {msg[:300]}") from e


class _PretrainedCommandEncoder(CommandTableEncoder):
    """Shared loading, batching and caching for the frozen Hugging Face text encoders."""

    kind = "pretrained"

    def __init__(
        self,
        vocabulary: Sequence[str],
        model_name_or_path: str,
        batch_size: int = 64,
        max_length: int = 128,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        cache_size: int = 4096,
        keep_model: bool = True,
    ):
        if batch_size < 1 or max_length < 1 or cache_size < 0:
            raise ValueError("batch_size and max_length must be >= 1 and cache_size >= 0")
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.cache_size = int(cache_size)
        model, tokenizer = _load_pretrained(self.kind, model_name_or_path, lambda src: self._load(src, dtype))
        model.requires_grad_(False)
        model.eval()
        model.to(torch.device(device) if device is not None else torch.device("cpu"))
        # Not submodules: stays out of state_dict(), .to(), parameters().
        self._lm = model
        self._tokenizer = tokenizer
        table = self._encode(list(vocabulary))
        super().__init__(
            vocabulary, table=table,
            source={"kind": self.kind, "model_name_or_path": str(model_name_or_path)},
        )
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        if not keep_model:
            self.release_model()

    # nn.Module.__setattr__ would register the model as a submodule; keep it a plain attribute.
    def __setattr__(self, name, value):
        if name in ("_lm", "_tokenizer"):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _load(self, src: str, dtype: torch.dtype):  # -> (model, tokenizer)
        """Abstract: each concrete encoder (T5, sentence) loads its own model class and tokenizer."""
        raise TypeError(f"{type(self).__name__} is abstract: use T5CommandEncoder or SentenceCommandEncoder")

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over real tokens: ``sum(h * m) / max(sum(m), 1e-9)`` (sentence-transformers' formula)."""
        m = mask.unsqueeze(-1).to(torch.float32)
        return (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> torch.Tensor:
        """``texts -> (N, D)`` float32 on the CPU, in batches of ``batch_size``."""
        if self._lm is None:
            raise RuntimeError(
                f"{self.kind} encoder: the language model was released (keep_model=False or a reloaded "
                "table); only vocabulary commands can be encoded"
            )
        device = next(self._lm.parameters()).device
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self._tokenizer(
                texts[i : i + self.batch_size], padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            )
            ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
            hidden = self._lm(input_ids=ids, attention_mask=mask).last_hidden_state
            out.append(self._pool(hidden, mask).cpu())
        return torch.cat(out, 0)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Any strings -> ``(N, out_dim)`` on the table's device and dtype.

        Vocabulary commands come from the table (identical to ``forward``); other strings are
        encoded by the model and kept in an LRU cache of ``cache_size`` entries.
        """
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._index and t not in self._cache]
        if missing:
            for t, e in zip(missing, self._encode(missing)):
                self._cache[t] = e
        rows = []
        for t in texts:
            if t in self._index:
                rows.append(self.table[self._index[t]])
            else:
                self._cache.move_to_end(t)
                rows.append(self._cache[t].to(self.table.device, self.table.dtype))
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        if not rows:
            return self.table.new_zeros(0, self.out_dim)
        return torch.stack(rows, 0)

    def release_model(self) -> None:
        """Drop the language model (frees its memory); the vocabulary table stays usable."""
        self._lm = None
        self._tokenizer = None


class T5CommandEncoder(_PretrainedCommandEncoder):
    """Frozen T5 encoder (transformers ``T5EncoderModel``), mean-pooled over the attention mask.

    ``out_dim`` = the model's ``d_model`` (512 for t5-small, 768 for t5-base). Computed in
    float32 by default (T5 overflows in fp16).

    Args:
        vocabulary: command strings in id order.
        model_name_or_path: a local folder (``save_pretrained`` layout: config.json, weights,
            tokenizer files) or a Hub id such as ``"google-t5/t5-small"`` (needs the Hub or its cache).
        batch_size: commands per forward when building the table / encoding new strings.
        max_length: tokens kept per command (truncation).
        device: where the model runs (default CPU); the table is moved with the policy.
        dtype: model weights dtype.
        cache_size: LRU size for :meth:`encode_texts` on strings outside the vocabulary.
        keep_model: False drops the model after the table is built.

    Raises:
        FileNotFoundError: a local path that is not a model folder.
        OSError: a Hub id that cannot be fetched (offline): names the id and says to pass a local path.
        CheckpointMismatchError (a ValueError): the checkpoint is not a T5 model, or lacks encoder weights.
    """

    kind = "t5"

    def _load(self, src: str, dtype: torch.dtype):
        from transformers import AutoTokenizer, T5EncoderModel

        cfg = _auto_config(self.kind, src)
        if cfg.model_type not in T5_MODEL_TYPES:
            raise CheckpointMismatchError(
                f"t5 encoder: {src} holds a {cfg.model_type!r} model, not T5 (model_type in {T5_MODEL_TYPES}); "
                "use kind='sentence' for BERT-style sentence-embedding models"
            )
        model, info = T5EncoderModel.from_pretrained(src, dtype=dtype, output_loading_info=True)
        if info["missing_keys"]:
            raise CheckpointMismatchError(f"t5 encoder: {src} lacks encoder weights {info['missing_keys'][:8]}")
        return model, AutoTokenizer.from_pretrained(src)


class SentenceCommandEncoder(_PretrainedCommandEncoder):
    """Frozen BERT-style sentence-embedding model (``AutoModel``), mean-pooled, L2-normalised.

    This is what sentence-transformers' all-MiniLM-L6-v2 computes (Transformer -> mean Pooling ->
    Normalize); ``out_dim`` = the model's hidden size (384 for MiniLM-L6). Point
    ``model_name_or_path`` at the folder holding ``config.json`` (a sentence-transformers folder's
    root). Same arguments and errors as :class:`T5CommandEncoder`, plus ``normalize``.
    """

    kind = "sentence"

    def __init__(self, vocabulary: Sequence[str], model_name_or_path: str, normalize: bool = True, **kw):
        self.normalize = bool(normalize)
        super().__init__(vocabulary, model_name_or_path, **kw)
        self.source["normalize"] = self.normalize

    def _load(self, src: str, dtype: torch.dtype):
        from transformers import AutoModel, AutoTokenizer

        cfg = _auto_config(self.kind, src)
        if getattr(cfg, "is_encoder_decoder", False) or cfg.model_type in T5_MODEL_TYPES:
            raise CheckpointMismatchError(
                f"sentence encoder: {src} holds an encoder-decoder {cfg.model_type!r} model; "
                "use kind='t5' for T5 checkpoints"
            )
        model, info = AutoModel.from_pretrained(src, dtype=dtype, output_loading_info=True)
        missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]  # pooler unused
        if missing:
            raise CheckpointMismatchError(f"sentence encoder: {src} lacks weights {missing[:8]}")
        return model, AutoTokenizer.from_pretrained(src)

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = super()._pool(hidden, mask)
        return F.normalize(pooled, p=2, dim=1) if self.normalize else pooled


COMMAND_ENCODERS = {
    "learned": LearnedCommandEncoder,
    "t5": T5CommandEncoder,
    "sentence": SentenceCommandEncoder,
    "table": CommandTableEncoder,
}


def build_command_encoder(kind: str, vocabulary: Sequence[str], **kw) -> nn.Module:
    """Command encoder by kind.

    - ``"learned"``: trainable ``nn.Embedding`` (``out_dim``, default 64), one row per command.
    - ``"t5"``: :class:`T5CommandEncoder` (``model_name_or_path`` required).
    - ``"sentence"``: :class:`SentenceCommandEncoder` (``model_name_or_path`` required).
    - ``"table"``: empty :class:`CommandTableEncoder` (``out_dim``), the reload target of a saved
      t5/sentence encoder (see :meth:`CommandTableEncoder.reload_config`).

    Raises:
        ValueError: unknown kind. TypeError: an argument the kind does not take.
    """
    if kind not in COMMAND_ENCODERS:
        raise ValueError(f"unknown command encoder kind {kind!r}; available: {sorted(COMMAND_ENCODERS)}")
    if kind in ("t5", "sentence") and not kw.get("model_name_or_path"):
        raise ValueError(
            f"command encoder kind {kind!r} needs model_name_or_path (a local model folder or a Hub id)"
        )
    return COMMAND_ENCODERS[kind](vocabulary, **kw)


__all__ = [
    "CheckpointMismatchError",
    "CommandTableEncoder",
    "T5CommandEncoder",
    "SentenceCommandEncoder",
    "COMMAND_ENCODERS",
    "build_command_encoder",
]
