"""The modules of multimodal and encoder-decoder models, for mergekit's `modules` recipes (a merge of
its own for each module: text decoder, vision tower, projector, encoder, ...), by model_type.

mergekit lists every weight of each module for one checkpoint format; exme needs only which module a
tensor belongs to, by name prefix (the longest prefix that fits wins), and finds a module's stack of
layers from the tensor names as it does for a whole model. Each module lists its prefixes in the
checkpoint formats transformers writes or has written (the older top-level `language_model.` and
transformers' later `model.language_model.` names), and the config keys of its number of layers,
each of which a merge that slices the module sets where the config has it (dotted: nested configs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exme.errors import ExmeError


@dataclass(frozen=True)
class ModuleLayout:
    prefixes: tuple[str, ...]
    layer_count_keys: tuple[str, ...] = ()


def _vision_language(text: str, vision: str, vision_count_key: str) -> dict[str, ModuleLayout]:
    """Models that wrap a text decoder, a vision tower and a projector (Gemma 3, Mistral 3, Llama 4)."""
    return {
        "text_decoder": ModuleLayout(
            (f"{text}.", f"model.{text}.", "lm_head."), ("text_config.num_hidden_layers",)
        ),
        vision: ModuleLayout((f"{vision}.", f"model.{vision}."), (vision_count_key,)),
        "multi_modal_projector": ModuleLayout(("multi_modal_projector.", "model.multi_modal_projector.")),
    }


_QWEN2_VL = {
    "text_decoder": ModuleLayout(
        ("model.", "lm_head."), ("num_hidden_layers", "text_config.num_hidden_layers")
    ),
    "vision_tower": ModuleLayout(("visual.", "model.visual."), ("vision_config.depth",)),
    "multi_modal_projector": ModuleLayout(("visual.merger.", "model.visual.merger.")),
}
_QWEN3_VL = {
    "text_decoder": ModuleLayout(("model.language_model.", "lm_head."), ("text_config.num_hidden_layers",)),
    "vision_tower": ModuleLayout(("model.visual.",), ("vision_config.depth",)),
    "multi_modal_projector": ModuleLayout(("model.visual.merger.", "model.visual.deepstack_merger_list.")),
}
MODULE_LAYOUTS: dict[str, dict[str, ModuleLayout]] = {
    "qwen2_vl": _QWEN2_VL,
    "qwen2_5_vl": _QWEN2_VL,
    "qwen3_vl": _QWEN3_VL,
    "qwen3_vl_moe": _QWEN3_VL,
    "gemma3": _vision_language("language_model", "vision_tower", "vision_config.num_hidden_layers"),
    "mistral3": _vision_language("language_model", "vision_tower", "vision_config.num_hidden_layers"),
    "llama4": _vision_language("language_model", "vision_model", "vision_config.num_hidden_layers"),
    "t5": {
        "encoder": ModuleLayout(("encoder.",), ("num_layers",)),
        "decoder": ModuleLayout(("decoder.",), ("num_decoder_layers",)),
        "shared": ModuleLayout(("shared.", "lm_head.")),
    },
    "whisper": {
        "encoder": ModuleLayout(("model.encoder.",), ("encoder_layers",)),
        "decoder": ModuleLayout(("model.decoder.", "proj_out."), ("decoder_layers",)),
    },
}


def module_layout(config: Mapping[str, object], model: str) -> dict[str, ModuleLayout]:
    """The modules of a model, from its config's model_type."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODULE_LAYOUTS:
        raise ExmeError(
            f"'modules': model {model} has model_type {model_type!r}, whose modules exme does not know "
            f"(it knows those of {', '.join(sorted(MODULE_LAYOUTS))}); use 'models' or 'slices'"
        )
    return MODULE_LAYOUTS[model_type]


def modules_of(names: Iterable[str], layout: Mapping[str, ModuleLayout], model_type: str) -> dict[str, str]:
    """{tensor name: its module}: the module with the longest prefix the name starts with."""
    prefixes = sorted(
        ((prefix, module) for module, spec in layout.items() for prefix in spec.prefixes),
        key=lambda item: -len(item[0]),
    )
    result = {}
    for name in names:
        module = next((module for prefix, module in prefixes if name.startswith(prefix)), None)
        if module is None:
            raise ExmeError(
                f"'modules': tensor {name!r} belongs to none of the modules of model_type "
                f"{model_type!r} ({', '.join(layout)})"
            )
        result[name] = module
    return result
