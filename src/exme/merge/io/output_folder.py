"""The non-weight files of a merged model folder: config, tokenizer, model card, recipe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from exme.errors import ExmeError
from exme.merge.plan import MergePlan
from exme.merge.recipe import write_recipe

# Tokenizer files in the formats transformers saves, plus generation settings.
_TOKENIZER_PATTERNS = (
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt",
    "*.tiktoken", "chat_template*", "generation_config.json",
)  # fmt: skip
RECIPE_FILE = "merge_recipe.yml"


def _write_config(plan: MergePlan, directory: Path) -> None:
    config = dict(plan.config_source.config)
    dtype_name = str(plan.output_dtype).removeprefix("torch.")
    config["dtype"] = dtype_name
    if "torch_dtype" in config:
        config["torch_dtype"] = dtype_name
    if "lm_head.weight" in {job.output.name for job in plan.jobs}:
        # Some inputs had a separate output embedding, so the merged one is not tied any more.
        config["tie_word_embeddings"] = False
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _copy_tokenizer(plan: MergePlan, directory: Path) -> None:
    source = plan.tokenizer_folder
    files = sorted({f for pattern in _TOKENIZER_PATTERNS for f in source.glob(pattern)})
    if not files and plan.recipe.tokenizer_source not in (None, "base"):
        raise ExmeError(f"tokenizer_source {source} has no tokenizer files")
    for file in files:
        shutil.copy2(file, directory / file.name)


def _write_model_card(plan: MergePlan, directory: Path, title: str) -> None:
    method = plan.method
    reference = f" ([reference]({method.reference_url}))" if method.reference_url else ""
    inputs = [f"- base: `{plan.recipe.base_model}`"] if plan.base else []
    inputs += [f"- `{entry.model}`" for entry in plan.recipe.non_base_models]
    recipe_yaml = yaml.safe_dump(plan.recipe.to_dict(), sort_keys=False)
    card = "\n".join(
        [
            "---",
            "library_name: transformers",
            "tags: [merge, exme]",
            "---",
            f"# {title}",
            "",
            f"Merged with exme's streaming engine using **{method.pretty_name}**{reference}.",
            "",
            "## Inputs",
            *inputs,
            "",
            "## Recipe",
            "```yaml",
            recipe_yaml.rstrip(),
            "```",
            "",
        ]
    )
    (directory / "README.md").write_text(card)


def write_metadata_files(plan: MergePlan, directory: Path, title: str) -> None:
    _write_config(plan, directory)
    _copy_tokenizer(plan, directory)
    _write_model_card(plan, directory, title)
    write_recipe(plan.recipe, directory / RECIPE_FILE)
