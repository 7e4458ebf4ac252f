"""Place tests/code_eval_metric/code_eval.py in an HF evaluate cache exactly where an online
`evaluate.load("code_eval")` leaves the Hub's module (evaluate's own function writes it there), so
that lm-eval's code tasks load it offline, as they would after the pipeline's `prefetch`."""

from pathlib import Path

METRIC_SOURCE = Path(__file__).parent / "code_eval_metric" / "code_eval.py"
HUB_NAME = "evaluate-metric/code_eval"  # what evaluate.load("code_eval") asks the Hub for


def place_code_eval(hf_home: Path) -> Path:
    """Write the module into HF_HOME's evaluate cache (HF_MODULES_CACHE = HF_HOME/modules); returns
    its folder."""
    from evaluate.loading import _create_importable_file, init_dynamic_modules

    modules = init_dynamic_modules(hf_modules_cache=hf_home / "modules")
    _create_importable_file(
        local_path=str(METRIC_SOURCE),
        local_imports=[],
        additional_files=[],
        dynamic_modules_path=modules,
        module_namespace="metrics",
        name=HUB_NAME,
        download_mode=None,
    )
    return Path(modules) / "metrics" / HUB_NAME.replace("/", "--")
