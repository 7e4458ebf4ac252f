"""The `chat_template` key: a template name, "auto" (the template most input models share) or an
inline Jinja template; the merged model's tokenizer gets it as chat_template.jinja.

The named templates are the usual formats, written here (not copied from mergekit, whose text may
differ in whitespace). Transformers renders them with trim_blocks and lstrip_blocks.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from exme.errors import ExmeError

NAMED_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
        "+ message['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "mistral": (
        "{% if messages[0]['role'] == 'system' %}"
        "{% set system = messages[0]['content'] %}{% set turns = messages[1:] %}"
        "{% else %}{% set turns = messages %}{% endif %}"
        "{{ bos_token }}"
        "{% for message in turns %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate user/assistant after an optional system message') }}"
        "{% endif %}"
        "{% if message['role'] == 'user' %}"
        "{% if loop.first and system is defined %}"
        "{{ ' [INST] ' + system + '\\n\\n' + message['content'] + ' [/INST]' }}"
        "{% else %}{{ ' [INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
        "{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}"
        "{% endfor %}"
    ),
    "alpaca": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] | trim + '\\n\\n' }}"
        "{% elif message['role'] == 'user' %}"
        "{{ '### Instruction:\\n' + message['content'] | trim + '\\n\\n' }}"
        "{% elif message['role'] == 'user_context' %}"
        "{{ '### Input:\\n' + message['content'] | trim + '\\n\\n' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ '### Response:\\n' + message['content'] | trim + ('' if loop.last else '\\n\\n') }}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}"
        "{{ '### Response:\\n' }}{% endif %}"
    ),
}
AUTO = "auto"
_INLINE_MIN_LENGTH = 20  # shorter text with no '{' is a misspelt name, not a template


def check_chat_template(value: Any) -> str | None:
    if value is None or value == AUTO or value in NAMED_TEMPLATES:
        return value
    if not isinstance(value, str) or len(value) < _INLINE_MIN_LENGTH or "{" not in value:
        raise ExmeError(
            f"chat_template must be one of {', '.join([AUTO, *NAMED_TEMPLATES])} or a Jinja template, "
            f"got {value!r}"
        )
    return value


def model_chat_template(folder: Path) -> str | None:
    """A model's own template: chat_template.jinja, or the entry in tokenizer_config.json."""
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    config_file = folder / "tokenizer_config.json"
    if not config_file.exists():
        return None
    template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
    if isinstance(template, list):  # several named templates: take the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template


def resolve_chat_template(value: str, model_folders: Iterable[Path]) -> str | None:
    """The template text for a recipe's value; for "auto", the one most input models use (None
    when none has one)."""
    if value != AUTO:
        return NAMED_TEMPLATES.get(value, value)
    templates = [t.strip() for t in map(model_chat_template, model_folders) if t]
    return Counter(templates).most_common(1)[0][0] if templates else None
