"""Names of the models a run evaluates, shared by the Snakefile and the rule scripts.

A name encodes what a model is, so that one `evaluate` rule serves them all and the score table can
be rebuilt from file names: `base`, `sft-{step}`, `expo{rank}-a{alpha}` (a grid point),
`expo{rank}` (at its chosen alpha), `exme-b{beta}` (a grid point) and `exme` (the final model).
"""

import re
from dataclasses import dataclass

MODEL_NAME_PATTERN = r"base|sft-\d+|expo\d+(-a\d+(\.\d+)?)?|exme(-b\d+(\.\d+)?)?"
_MODEL_NAME = re.compile(
    r"^(?:(?P<base>base)|sft-(?P<step>\d+)|expo(?P<rank>\d+)(?:-a(?P<alpha>[\d.]+))?"
    r"|(?P<exme>exme)(?:-b(?P<beta>[\d.]+))?)$"
)


def format_coef(value: float) -> str:
    """A coefficient as it appears in file names: 0.25 -> '0.25', 1.0 -> '1'."""
    return f"{float(value):g}"


def sft_name(step: int) -> str:
    return f"sft-{step}"


def expo_name(rank: int, alpha: float | None = None) -> str:
    return f"expo{rank}" if alpha is None else f"expo{rank}-a{format_coef(alpha)}"


def exme_name(beta: float | None = None) -> str:
    return "exme" if beta is None else f"exme-b{format_coef(beta)}"


@dataclass(frozen=True)
class ModelName:
    """What a model name says: its method and, where the name holds them, step, rank and coefficient."""

    method: str
    step: int | None = None
    rank: int | None = None
    alpha: float | None = None
    beta: float | None = None

    @property
    def is_grid_point(self) -> bool:
        return self.alpha is not None or self.beta is not None


def parse_model_name(name: str) -> ModelName:
    match = _MODEL_NAME.match(name)
    if match is None:
        raise ValueError(f"not a model name of this pipeline: {name!r}")
    if match["base"]:
        return ModelName("base")
    if match["step"]:
        return ModelName("sft", step=int(match["step"]))
    if match["rank"]:
        alpha = float(match["alpha"]) if match["alpha"] else None
        return ModelName("expo", rank=int(match["rank"]), alpha=alpha)
    beta = float(match["beta"]) if match["beta"] else None
    return ModelName("exme", beta=beta)


def checkpoint_steps(max_steps: int, save_steps: int) -> list[int]:
    """The steps at which fine-tuning saves a checkpoint."""
    return list(range(save_steps, max_steps + 1, save_steps))
