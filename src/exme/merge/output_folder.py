"""The non-weight files of a merged model folder: config, tokenizer and chat template, the recipe
(exme's merge_recipe.yml and mergekit's mergekit_config.yml) and the model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from exme.errors import ExmeError
from exme.files import CONFIG_FILE
from exme.merge.chat_templates import resolve_chat_template
from exme.merge.plan import MergePlan
from exme.merge.provenance import CARD_FILE, MERGEKIT_CONFIG_FILE, mergekit_documents, model_card
from exme.merge.recipe import write_recipe
from exme.merge.vocabulary import add_new_tokens

# Tokenizer files in the formats transformers saves, plus generation settings.
_TOKENIZER_PATTERNS = (
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt",
    "*.tiktoken", "chat_template*", "generation_config.json",
)  # fmt: skip
RECIPE_FILE = "merge_recipe.yml"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def _write_config(plan: MergePlan, directory: Path) -> None:
    (directory / CONFIG_FILE).write_text(json.dumps(plan.config, indent=2) + "\n")


def _copy_tokenizer(plan: MergePlan, directory: Path) -> None:
    source = plan.tokenizer_folder
    files = sorted({f for pattern in _TOKENIZER_PATTERNS for f in source.glob(pattern)})
    if not files and plan.recipe.tokenizer_settings and plan.recipe.tokenizer_settings.source != "base":
        raise ExmeError(f"tokenizer source {plan.recipe.tokenizer_settings.source} has no tokenizer files")
    for file in files:
        shutil.copy2(file, directory / file.name)
    if plan.vocabulary is not None:
        add_new_tokens(plan.vocabulary, directory)


def _write_chat_template(plan: MergePlan, directory: Path) -> None:
    """chat_template.jinja, and no other template beside it (transformers would read either)."""
    template = resolve_chat_template(
        plan.recipe.chat_template, [f.tokenizer_folder for f in plan.folders.values()]
    )
    if template is None:
        return
    (directory / "chat_template.json").unlink(missing_ok=True)
    config_file = directory / "tokenizer_config.json"
    if config_file.exists():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if config.pop("chat_template", None) is not None:
            config_file.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    (directory / CHAT_TEMPLATE_FILE).write_text(template, encoding="utf-8")


def _input_lines(plan: MergePlan) -> list[str]:
    lines = []
    for name in plan.folders:
        role = " (base)" if name == plan.recipe.base_model else ""
        lines.append(f"- `{name}`{role}")
    return lines


def write_metadata_files(
    plan: MergePlan, directory: Path, title: str, copy_tokenizer: bool = True, write_model_card: bool = True
) -> None:
    _write_config(plan, directory)
    if copy_tokenizer:
        _copy_tokenizer(plan, directory)
    if plan.recipe.chat_template:
        _write_chat_template(plan, directory)
    write_recipe(plan.recipe, directory / RECIPE_FILE)
    mergekit_config = mergekit_documents(plan.recipe)
    if mergekit_config is not None:
        text = yaml.safe_dump_all(mergekit_config, sort_keys=False)
        (directory / MERGEKIT_CONFIG_FILE).write_text(text, encoding="utf-8")
    if not write_model_card:
        return
    card = model_card(
        plan.recipe,
        plan.folders,
        title=title,
        method_name=plan.method.pretty_name,
        reference_url=plan.method.reference_url,
        inputs=_input_lines(plan),
        mergekit_config=mergekit_config,
    )
    card.save(directory / CARD_FILE)
