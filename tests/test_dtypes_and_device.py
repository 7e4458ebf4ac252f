from pathlib import Path

import pytest
import torch
import yaml

from exme.device import resolve_device
from exme.dtypes import AUTO, MERGE_DTYPES, MODEL_DTYPES, check_dtype, torch_dtype
from exme.errors import ExmeError


def test_names_map_to_torch_dtypes_and_auto_stays_a_name():
    assert torch_dtype("bfloat16", "evaluation.dtype") is torch.bfloat16
    assert torch_dtype(AUTO, "evaluation.dtype") == "auto"
    assert torch_dtype(torch.float16, "dtype") is torch.float16
    assert torch_dtype("float64", "dtype", MERGE_DTYPES) is torch.float64


def test_an_unknown_or_excluded_name_is_refused_naming_the_key():
    with pytest.raises(ExmeError, match=r"finetune\.dtype: 'fp8' is not one of auto, float32"):
        check_dtype("fp8", "finetune.dtype")
    with pytest.raises(ExmeError, match="out_dtype: 'auto'"):
        torch_dtype("auto", "out_dtype", MERGE_DTYPES)
    with pytest.raises(ExmeError, match="float64"):
        torch_dtype(torch.float64, "evaluation.dtype", MODEL_DTYPES)


def test_the_device_asked_for_else_the_default():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_named():
    with pytest.raises(ExmeError, match="device cuda:1 was requested but CUDA is not available"):
        resolve_device("cuda:1")


def test_the_config_schema_offers_the_model_dtypes():
    schema = yaml.safe_load(
        (Path(__file__).parent.parent / "workflow/schemas/config.schema.yaml").read_text()
    )
    for section in ("finetune", "evaluation"):
        assert tuple(schema["properties"][section]["properties"]["dtype"]["enum"]) == MODEL_DTYPES, section
