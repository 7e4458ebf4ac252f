"""The output vocabulary of `tokenizer_source` / `tokenizer:`, and the embedding rows that follow it.

As in mergekit, the output tokenizer is a model's (`base`: the base model's, or a named model's) or
the union of every input's vocabulary (`union`: the base's tokens, then the others' new tokens,
added to the base tokenizer), plus the tokens a `tokenizer.tokens` entry names. Each input's
vocabulary tensors (embeddings, output heads: the tensors outside the layers with one row per token)
are re-indexed to it before merging. A token some input lacks takes, in that input, the row of the
one model that has it, else the base's, else the average of those that have it (zeros if none);
`tokenizer.tokens` chooses another source (`force`: even for models that have the token). Rows
beyond the vocabulary (`pad_to_multiple_of`) are the mean row.

Vocabularies are read from tokenizer.json (fast tokenizers); a model without tokenizer files is
taken to share the base model's vocabulary, as mergekit does. Unlike mergekit, when every input
already has the output vocabulary and the recipe asks for no union, tokens or padding, the embedding
rows are left as they are (mergekit cuts a padded embedding down to the tokenizer's length).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from exme.errors import ExmeError
from exme.merge.io.model_folder import ModelFolder
from exme.merge.recipe import TokenizerSettings, TokenSetting

TOKENIZER_FILE = "tokenizer.json"
_OTHER_TOKENIZER_FILES = ("tokenizer.model", "vocab.json", "vocab.txt", "tokenizer_config.json")


@dataclass(frozen=True)
class Tokenizer:
    """A model's vocabulary as tokenizer.json gives it: token → id, and its added tokens' entries."""

    vocabulary: dict[str, int]
    added: dict[str, dict[str, Any]]


def read_tokenizer(folder: Path, model: str) -> Tokenizer | None:
    file = folder / TOKENIZER_FILE
    if not file.exists():
        if any((folder / name).exists() for name in _OTHER_TOKENIZER_FILES):
            raise ExmeError(
                f"model {model}: its tokenizer has no {TOKENIZER_FILE} (a slow tokenizer); merging "
                "vocabularies needs a fast tokenizer: save it with transformers first"
            )
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        entries = data["model"]["vocab"]
        vocabulary = (
            {token: index for index, (token, _score) in enumerate(entries)}  # Unigram: [token, score]
            if isinstance(entries, list)
            else dict(entries)
        )
        added = {entry["content"]: entry for entry in data.get("added_tokens") or []}
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ExmeError(f"model {model}: cannot read {file} ({error})") from error
    vocabulary.update({content: entry["id"] for content, entry in added.items()})
    return Tokenizer(vocabulary, added)


def _vocab_size(folder: ModelFolder) -> int:
    size = folder.config.get("vocab_size")
    if not isinstance(size, int):
        raise ExmeError(f"model {folder}: config.json has no vocab_size, needed to merge vocabularies")
    return size


def is_vocabulary_tensor(shape: tuple[int, ...], folder: ModelFolder, in_layer: bool) -> bool:
    """Tensors outside the layers with one row per token (embeddings, output heads and their bias)."""
    return not in_layer and bool(shape) and shape[0] == folder.config.get("vocab_size")


@dataclass(frozen=True)
class VocabularyMap:
    """How the inputs of one vocabulary tensor are re-indexed: per input, the source row of each
    output token (-1: filled instead), and the filled tokens' rows (the mean of (input, row) pairs;
    zeros when there are none)."""

    rows: int
    source_rows: tuple[torch.Tensor, ...]
    filled: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        fills = {}
        for token_id, sources in self.filled:
            if sources:
                fills[token_id] = sum(tensors[i][row] for i, row in sources) / len(sources)
            else:
                fills[token_id] = tensors[0].new_zeros(tensors[0].shape[1:])
        results = []
        for tensor, source_rows in zip(tensors, self.source_rows, strict=True):
            source_rows = source_rows.to(tensor.device)
            tokens = len(source_rows)
            result = tensor.new_zeros((self.rows, *tensor.shape[1:]))
            have = source_rows >= 0
            result[:tokens][have] = tensor[source_rows[have]]
            for token_id, row in fills.items():
                if source_rows[token_id] < 0:
                    result[token_id] = row
            if self.rows > tokens:
                result[tokens:] = result[:tokens].mean(dim=0)
            results.append(result)
        return results


@dataclass(frozen=True)
class OutputVocabulary:
    tokens: dict[str, int]  # the output tokenizer's vocabulary
    rows: int  # rows of the output's vocabulary tensors (padding included)
    new_tokens: tuple[dict[str, Any], ...]  # added_tokens entries appended to its tokenizer.json
    source_rows: Mapping[str, torch.Tensor]  # per model: each output token's row there, or -1
    original: Mapping[str, dict[str, int]]  # per model: its own vocabulary
    settings: TokenizerSettings
    base: str

    def map_for(self, models: Sequence[str], tensor: str) -> VocabularyMap:
        names = {token_id: token for token, token_id in self.tokens.items()}
        source_rows = [self.source_rows[model].clone() for model in models]
        present = torch.stack(source_rows) >= 0
        partial = (~present.all(dim=0)).nonzero().squeeze(1).tolist()
        configured = [self.tokens[token] for token in self.settings.tokens]
        filled = []
        for token_id in sorted(set(partial) | set(configured)):
            token = names[token_id]
            setting = self.settings.tokens.get(token, TokenSetting())
            if setting.source is not None:
                sources = self._configured_sources(setting, token, token_id, models, tensor)
            else:
                sources = self._default_sources(token_id, present[:, token_id].tolist(), models)
            if setting.force:
                for rows in source_rows:
                    rows[token_id] = -1
            filled.append((token_id, sources))
        return VocabularyMap(self.rows, tuple(source_rows), tuple(filled))

    def _default_sources(self, token_id: int, present: list[bool], models: Sequence[str]):
        having = [i for i, has in enumerate(present) if has]
        if len(having) > 1 and self.base in models and present[models.index(self.base)]:
            having = [models.index(self.base)]
        return tuple((i, int(self.source_rows[models[i]][token_id])) for i in having)

    def _configured_sources(self, setting: TokenSetting, token: str, token_id: int, models, tensor):
        source = setting.source
        if source.kind == "zero":
            return ()
        if source.model not in models:
            raise ExmeError(
                f"tokenizer.tokens[{token!r}] takes its row from model {source.model!r}, which is not "
                f"an input of tensor {tensor!r}"
            )
        index = models.index(source.model)
        if source.kind == "model":
            row = int(self.source_rows[source.model][token_id])
            missing = f"model {source.model!r} has no token {token!r}"
        elif source.token_id is not None:
            row, missing = source.token_id, f"token_id {source.token_id} is not in model {source.model!r}"
        else:
            row = self.original[source.model].get(source.token, -1)
            missing = f"model {source.model!r} has no token {source.token!r}"
        if row < 0 or row >= _row_count(self.original[source.model]):
            raise ExmeError(f"tokenizer.tokens[{token!r}]: {missing}")
        return ((index, row),)


def _row_count(vocabulary: dict[str, int]) -> int:
    return max(vocabulary.values(), default=-1) + 1


def _added_entry(content: str, donor: Tokenizer | None, token_id: int) -> dict[str, Any]:
    """A new added_tokens entry: the donor model's settings for its added token, else a plain one
    (what transformers' add_tokens writes)."""
    template = (donor.added.get(content) if donor else None) or {
        "single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": False,
    }  # fmt: skip
    return {**template, "id": token_id, "content": content}


def output_vocabulary(
    settings: TokenizerSettings, base: ModelFolder, folders: Sequence[ModelFolder], source: ModelFolder | None
) -> OutputVocabulary | None:
    """The output vocabulary and each model's rows in it; None when nothing needs re-indexing.

    `source` is the tokenizer's model when the recipe names one (else the base's tokenizer is used).
    A model may also be a nested recipe (exme.merge.plan.NestedModel): its config and tokenizer_folder
    are those of the folder it would write.
    Models without tokenizer.json are taken to share the base's vocabulary, or the output's when the
    base has none either. When no model has a tokenizer and the recipe asks for no union, tokens or
    padding, there is no vocabulary to re-index: the rows are kept (writing the output folder then
    fails for want of tokenizer files, building the weights in memory does not)."""
    donor = read_tokenizer((source or base).tokenizer_folder, str(source or base))
    keeps_rows = settings.source != "union" and not settings.tokens and not settings.pad_to_multiple_of
    if donor is None and keeps_rows and not any(read_tokenizer(f.tokenizer_folder, str(f)) for f in folders):
        return None
    if donor is None:
        role = "tokenizer source" if source else f"tokenizer source {settings.source!r} needs base model"
        raise ExmeError(f"{role} {source or base} has no tokenizer.json")
    base_tokenizer = read_tokenizer(base.tokenizer_folder, str(base)) or donor
    tokenizers = {str(f): read_tokenizer(f.tokenizer_folder, str(f)) or base_tokenizer for f in folders}
    if source is None:
        base_size = _vocab_size(base)
        if too_large := sorted(t for t, i in donor.vocabulary.items() if i >= base_size)[:3]:
            raise ExmeError(
                f"the tokenizer of base model {base} has tokens beyond its vocab_size {base_size} "
                f"({too_large}); exme cannot strip them"
            )
    tokens = dict(donor.vocabulary)
    new_tokens: list[dict[str, Any]] = []

    def add(content: str, origin: Tokenizer | None) -> None:
        if content not in tokens:
            tokens[content] = _row_count(tokens)
            new_tokens.append(_added_entry(content, origin, tokens[content]))

    if settings.source == "union":
        others = [(f, tokenizers[str(f)]) for f in folders if tokenizers[str(f)] is not base_tokenizer]
        for added_pass in (False, True):  # as mergekit: plain tokens first, then added tokens
            for folder, tokenizer in others:
                size = _vocab_size(folder)
                for token, token_id in sorted(tokenizer.vocabulary.items(), key=lambda item: item[1]):
                    if token_id < size and (token in tokenizer.added) == added_pass:
                        add(token, tokenizer)
    for token in settings.tokens:
        add(token, None)
    rows = _row_count(tokens)
    if settings.pad_to_multiple_of:
        rows += -rows % settings.pad_to_multiple_of
    ordered = _by_id(tokens)
    source_rows = {}
    for folder in folders:
        own, size = tokenizers[str(folder)].vocabulary, _vocab_size(folder)
        rows_there = [own.get(token, -1) for token in ordered]
        source_rows[str(folder)] = torch.tensor([row if row < size else -1 for row in rows_there])
    if keeps_rows and all(tokenizers[str(f)].vocabulary == tokens for f in folders):
        return None
    return OutputVocabulary(
        tokens=tokens,
        rows=rows,
        new_tokens=tuple(new_tokens),
        source_rows=source_rows,
        original={name: tokenizer.vocabulary for name, tokenizer in tokenizers.items()},
        settings=settings,
        base=str(base),
    )


def _by_id(tokens: dict[str, int]) -> list[str]:
    ordered = sorted(tokens, key=tokens.__getitem__)
    if [tokens[token] for token in ordered] != list(range(len(ordered))):
        raise ExmeError("the output tokenizer's token ids are not consecutive from 0")
    return ordered


def add_new_tokens(vocabulary: OutputVocabulary, directory: Path) -> None:
    """Add the new tokens to the tokenizer files copied into `directory`: tokenizer.json, and
    tokenizer_config.json's added_tokens_decoder if it has one."""
    data = json.loads((directory / TOKENIZER_FILE).read_text(encoding="utf-8"))
    data["added_tokens"] = [*(data.get("added_tokens") or []), *vocabulary.new_tokens]
    (directory / TOKENIZER_FILE).write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    config_file = directory / "tokenizer_config.json"
    if vocabulary.new_tokens and config_file.exists():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if "added_tokens_decoder" in config:
            for entry in vocabulary.new_tokens:
                config["added_tokens_decoder"][str(entry["id"])] = {
                    key: value for key, value in entry.items() if key != "id"
                }
            config_file.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n")
