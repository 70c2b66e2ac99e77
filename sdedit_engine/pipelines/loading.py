"""Loading diffusers models for :class:`~sdedit_engine.pipelines.pipeline.SDEditPipeline`: offline first, safetensors only.

Policy (issue 4):

* **Offline first.** Everything is loaded with ``local_files_only=True`` unless the caller passes
  ``allow_download=True``. A path that does not exist and is not in the Hugging Face cache is a
  :class:`ModelLoadError` whose message names the path.
* **Safetensors only.** Pickle checkpoints (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) can run code when
  unpickled, so they are refused with a message saying how to convert; they are never opened.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
SUPPORTED_PIPELINES = ("StableDiffusion", "StableDiffusionXL", "StableDiffusionImg2Img", "StableDiffusionXLImg2Img",
                       "StableDiffusionInpaint", "StableDiffusionXLInpaint", "StableDiffusionControlNet",
                       "StableDiffusionXLControlNet", "StableDiffusionControlNetImg2Img",
                       "StableDiffusionXLControlNetImg2Img")
# flow-matching transformers the backend can call (sdedit_engine.pipelines.flow), by model_index.json class name
FLOW_TRANSFORMERS = ("SD3Transformer2DModel", "FluxTransformer2DModel")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class ModelLoadError(ValueError):
    """A model could not be loaded; the message names the path and what to do."""


class PickleCheckpointError(ModelLoadError):
    """A pickle checkpoint was given: refused, because unpickling can execute arbitrary code."""


def dtype_kwargs(dtype) -> dict:
    """``{"dtype": …}`` for diffusers versions that renamed it, else the older ``{"torch_dtype": …}``."""
    if dtype is None:
        return {}
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (present once `dtype` exists)
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def refuse_pickle(path: Path) -> None:
    raise PickleCheckpointError(
        f"refusing pickle checkpoint {path}: only .safetensors weights are loaded (unpickling can run code); "
        "convert it to safetensors first"
    )


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not Path(name).exists()


def _folder_weights_check(folder: Path) -> None:
    """Refuse a diffusers folder whose component weights exist only as pickle files."""
    index = folder / "model_index.json"
    try:
        spec = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{index} is missing or unreadable ({e}); expected a diffusers model folder") from None
    for comp, value in spec.items():
        if comp.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        sub = folder / comp
        if not sub.is_dir():
            continue
        files = [f for f in sub.iterdir() if f.is_file()]
        has_safe = any(f.suffix == ".safetensors" for f in files)
        pickles = [f for f in files if f.suffix in PICKLE_SUFFIXES]
        if pickles and not has_safe:
            refuse_pickle(pickles[0])


def pipeline_class_name(folder: Path) -> str:
    spec = json.loads((folder / "model_index.json").read_text())
    return str(spec.get("_class_name", ""))


def check_pipeline_class(folder: Path) -> str:
    """The pipeline class of a diffusers folder if SDEditPipeline can run it, else a ModelLoadError naming it.

    Supported: SD 1.x/2.x and SDXL UNet pipelines, and any pipeline whose scheduler is
    ``FlowMatchEulerDiscreteScheduler`` with a transformer in :data:`FLOW_TRANSFORMERS` (SD3/SD3.5, FLUX.1).
    """
    spec = json.loads((folder / "model_index.json").read_text())
    cls_name = str(spec.get("_class_name", ""))
    if any(cls_name == c + "Pipeline" for c in SUPPORTED_PIPELINES):
        return cls_name
    comp = lambda k: (spec.get(k) or [None, None])[1] if isinstance(spec.get(k), list) else None  # noqa: E731
    transformer, scheduler = comp("transformer"), comp("scheduler")
    if transformer in FLOW_TRANSFORMERS and scheduler == "FlowMatchEulerDiscreteScheduler":
        return cls_name
    if transformer is not None:
        raise ModelLoadError(f"{folder}: unsupported pipeline {cls_name!r} (transformer {transformer}, scheduler {scheduler}); "
                             f"SDEditPipeline runs SD 1.x/2.x, SDXL and flow-matching models with {', '.join(FLOW_TRANSFORMERS)} "
                             "(SD3/SD3.5, FLUX.1 dev/schnell)")
    raise ModelLoadError(f"{folder}: unsupported pipeline {cls_name!r}; SDEditPipeline supports SD 1.x/2.x, SDXL, SD3/SD3.5 "
                         "and FLUX.1")


def load_diffusers_pipeline(model: str | Path, *, allow_download: bool = False, torch_dtype=None,
                            variant: str | None = None, **overrides: Any):
    """Load a Stable Diffusion (1.x/2.x) or SDXL diffusers pipeline from a folder, the HF cache, or (if allowed) the hub."""
    name = str(model)
    path = Path(name).expanduser()
    if path.is_file():
        raise ModelLoadError(f"{path} is a file; use from_single_file for single-file .safetensors checkpoints")
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"{path} is not a diffusers model folder (no model_index.json)")
        _folder_weights_check(path)
        source, local_only = str(path), True
        cls_name = check_pipeline_class(path)
    elif looks_like_hub_id(name):
        source, local_only, cls_name = name, not allow_download, ""
    else:
        raise ModelLoadError(f"model not found: {path} (no such folder)")
    import diffusers  # after the path checks: a typo fails fast, without the slow import

    kwargs: dict[str, Any] = dict(local_files_only=local_only, use_safetensors=True)
    kwargs.update(dtype_kwargs(torch_dtype))
    if variant:
        kwargs["variant"] = variant
    if not cls_name or cls_name.startswith("StableDiffusion") and "XL" not in cls_name and "3" not in cls_name:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    kwargs.update(overrides)
    try:
        return diffusers.DiffusionPipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError, EnvironmentError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not path.is_dir():
            how = "" if allow_download else "; downloads are disabled (allow_download=True / --allow-download)"
            raise ModelLoadError(f"model {name!r} is not a local folder and could not be loaded from the Hugging Face cache{how}: {msg}") from None
        if "safetensors" in msg.lower():
            raise ModelLoadError(f"{path}: no .safetensors weights found (pickle weights are refused): {msg}") from None
        raise ModelLoadError(f"cannot load model {path}: {msg}") from None


def single_file_is_xl(path: Path) -> bool:
    """Tell SDXL from SD1.x/2.x by the tensor names (read from the safetensors header only)."""
    return single_file_family(path) == "sdxl"


def single_file_family(path: Path) -> str:
    """``sd``, ``sdxl``, ``sd3`` or ``flux`` from the tensor names of a ``.safetensors`` header (no weights read).

    Flux: BFL ``double_blocks.*`` / ``single_blocks.*`` or diffusers ``single_transformer_blocks.*``; SD3:
    ``joint_blocks.*`` or a diffusers MMDiT (``context_embedder`` + ``pos_embed``); SDXL: a second
    ``conditioner.embedders``; anything else is taken for SD 1.x/2.x.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    names = {k.split(".", 2)[1] if k.startswith("model.diffusion_model.") else k.split(".", 1)[0] for k in keys}
    if names & {"double_blocks", "single_blocks", "single_transformer_blocks"}:
        return "flux"
    if "joint_blocks" in names or {"context_embedder", "pos_embed"} <= names:
        return "sd3"
    return "sdxl" if any(k.startswith("conditioner.embedders.1.") for k in keys) else "sd"


def _load_flow_single_file(p: Path, family: str, config, allow_download: bool, torch_dtype, overrides: dict):
    """A single-file SD3 / Flux transformer (BFL/SAI or diffusers names) + the other components of ``config``.

    Flux files (``flux1-dev.safetensors``) hold only the transformer; the text encoders, VAE and scheduler
    come from ``config``, a diffusers folder of the same family (offline; a cached hub id with downloads).
    """
    import diffusers

    if config is None:
        raise ModelLoadError(f"{p} is a single-file {family.upper()} transformer: pass config=<diffusers folder of that "
                             "family> (CLI --config) for its text encoders, VAE and scheduler")
    cfg = Path(str(config)).expanduser()
    if cfg.is_dir():
        if not (cfg / "model_index.json").is_file():
            raise ModelLoadError(f"config {cfg} is not a diffusers model folder (no model_index.json)")
        check_pipeline_class(cfg)
        src = str(cfg)
    elif looks_like_hub_id(str(config)):
        src = str(config)
    else:
        raise ModelLoadError(f"config not found: {cfg}")
    cls = diffusers.SD3Transformer2DModel if family == "sd3" else diffusers.FluxTransformer2DModel
    kw: dict[str, Any] = dict(local_files_only=not allow_download, **dtype_kwargs(torch_dtype))
    try:
        transformer = cls.from_single_file(str(p), config=src, subfolder="transformer", **kw)
        return diffusers.DiffusionPipeline.from_pretrained(src, transformer=transformer, use_safetensors=True,
                                                           **kw, **overrides)
    except Exception as e:  # one line for the user
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"cannot load single-file {family.upper()} checkpoint {p} with config {src}: {msg}") from None


def load_single_file_pipeline(path: str | Path, *, config: str | Path | None = None, allow_download: bool = False,
                              torch_dtype=None, **overrides: Any):
    """Load an original-format (LDM/A1111) ``.safetensors`` checkpoint with diffusers' ``from_single_file``;
    SD3 / Flux transformer files go through :func:`_load_flow_single_file`.

    Offline this needs ``config``: a local diffusers folder (or a cached hub id) with the same
    architecture, whose component configs describe the checkpoint's tensors.
    """
    p = Path(path).expanduser()
    if p.suffix.lower() in PICKLE_SUFFIXES:
        refuse_pickle(p)
    if not p.is_file():
        raise ModelLoadError(f"checkpoint not found: {p}")
    if p.suffix.lower() != ".safetensors":
        raise ModelLoadError(f"{p}: single-file checkpoints must be .safetensors")
    try:
        family = single_file_family(p)
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise ModelLoadError(f"cannot read safetensors checkpoint {p}: {e}") from None
    if family in ("sd3", "flux"):
        return _load_flow_single_file(p, family, config, allow_download, torch_dtype, overrides)
    xl = family == "sdxl"
    import diffusers

    cls = diffusers.StableDiffusionXLPipeline if xl else diffusers.StableDiffusionPipeline
    kwargs: dict[str, Any] = dict(local_files_only=not allow_download)
    if config is not None:
        cfg = Path(config).expanduser()
        if not cfg.exists() and not looks_like_hub_id(str(config)):
            raise ModelLoadError(f"config not found: {cfg}")
        kwargs["config"] = str(cfg) if cfg.exists() else str(config)
    kwargs.update(dtype_kwargs(torch_dtype))
    if not xl:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    kwargs.update(overrides)
    try:
        return cls.from_single_file(str(p), **kwargs)
    except Exception as e:  # diffusers raises many types here; the user needs one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = "" if config is not None else " (offline loading needs config=<diffusers folder of the same architecture>)"
        raise ModelLoadError(f"cannot load single-file checkpoint {p}{hint}: {msg}") from None


def load_controlnet(model, *, allow_download: bool = False, torch_dtype=None):
    """A ``ControlNetModel`` from a folder (or cached hub id); passes an already built model through."""
    import diffusers

    if isinstance(model, diffusers.ControlNetModel):
        return model
    name = str(model)
    p = Path(name).expanduser()
    if p.is_file():
        if p.suffix.lower() in PICKLE_SUFFIXES:
            refuse_pickle(p)
        loader, src = diffusers.ControlNetModel.from_single_file, str(p)
    elif p.is_dir() or looks_like_hub_id(name):
        loader, src = diffusers.ControlNetModel.from_pretrained, str(p) if p.is_dir() else name
    else:
        raise ModelLoadError(f"controlnet not found: {p}")
    kwargs: dict[str, Any] = dict(local_files_only=not allow_download)
    if loader is diffusers.ControlNetModel.from_pretrained:
        kwargs["use_safetensors"] = True
    kwargs.update(dtype_kwargs(torch_dtype))
    try:
        return loader(src, **kwargs)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"cannot load controlnet {src}: {msg}") from None


def check_lora_path(path) -> Path | str:
    """Validate a LoRA location: a .safetensors file or a folder holding one (pickle refused)."""
    name = str(path)
    p = Path(name).expanduser()
    if p.is_file():
        if p.suffix.lower() in PICKLE_SUFFIXES:
            refuse_pickle(p)
        if p.suffix.lower() != ".safetensors":
            raise ModelLoadError(f"{p}: LoRA weights must be a .safetensors file")
        return p
    if p.is_dir():
        files = list(p.glob("*.safetensors"))
        if not files:
            pickles = [f for f in p.iterdir() if f.suffix in PICKLE_SUFFIXES]
            if pickles:
                refuse_pickle(pickles[0])
            raise ModelLoadError(f"no .safetensors LoRA weights in {p}")
        return p
    if looks_like_hub_id(name):
        return name
    raise ModelLoadError(f"LoRA not found: {p}")
