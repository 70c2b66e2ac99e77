"""What t0 means on a given model, read from its configs only (no weights loaded): ``sdedit info --model PATH``.

:func:`describe_model` returns the family (``sd``, ``sdxl``, ``sd3``, ``flux``, ``flux-schnell``), the
prediction type, the engine schedule (discrete ᾱ table, or the flow shift: SD3-style ``shift`` or Flux's
resolution-dependent μ) and, for a few t0, where SDEdit starts: flow s (flow models), engine σ and log-SNR, under
each t0 scale. The schedules are the engine's own (:mod:`sdedit_engine.core.flow`, ``DiscreteSchedule``), built
from the diffusers scheduler config exactly as :class:`~sdedit_engine.pipelines.pipeline.SDEditPipeline` does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from ..core.flow import T0_SCALES
from ..core.schedules import DiscreteSchedule
from .flow import DEFAULT_GUIDANCE, TRANSFORMER_FAMILIES, dynamic_mu, schedule_from_config
from .loading import PICKLE_SUFFIXES, ModelLoadError, check_pipeline_class, refuse_pickle, single_file_family

GUIDANCE_MEANING = {
    "sd": "classifier-free guidance (default 7.5)", "sdxl": "classifier-free guidance (default 7.5)",
    "sd3": "classifier-free guidance (default 7.0)",
    "flux": "the guidance embedding of the distilled model, one call per step, no negative prompt (default 3.5)",
    "flux-schnell": "ignored (schnell has no guidance input)",
}


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from None


def _folder_family(folder: Path) -> tuple[str, dict, str]:
    cls_name = check_pipeline_class(folder)
    spec = _json(folder / "model_index.json")
    sched = _json(folder / "scheduler" / "scheduler_config.json")
    tr = (spec.get("transformer") or [None, None])[1]
    if tr in TRANSFORMER_FAMILIES:
        fam = TRANSFORMER_FAMILIES[tr]
        if fam == "flux" and not _json(folder / "transformer" / "config.json").get("guidance_embeds", True):
            fam = "flux-schnell"
        return fam, sched, cls_name
    unet = _json(folder / "unet" / "config.json")
    return ("sdxl" if unet.get("addition_embed_type") == "text_time" else "sd"), sched, cls_name


def describe_model(model, config=None, height: int = 1024, width: int = 1024,
                   t0s: Sequence[float] = (0.2, 0.4, 0.5, 0.6, 0.8, 1.0)) -> dict:
    """Family, prediction, schedule and the start of each t0 for a diffusers folder or a single file."""
    p = Path(str(model)).expanduser()
    if p.is_file():
        if p.suffix.lower() in PICKLE_SUFFIXES:
            refuse_pickle(p)
        try:
            family = single_file_family(p)
        except Exception as e:
            raise ModelLoadError(f"cannot read safetensors checkpoint {p}: {e}") from None
        if config is None:
            raise ModelLoadError(f"{p} is a single file ({family}); pass --config <diffusers folder> for its scheduler")
        cfg_family, sched, cls_name = _folder_family(Path(str(config)).expanduser())
        if family in ("flux", "sd3") and cfg_family.split("-")[0] != family:
            raise ModelLoadError(f"{p} is a {family} checkpoint but config {config} is a {cfg_family} model")
        family = cfg_family if cfg_family.startswith(family) else family
    elif p.is_dir():
        if not (p / "model_index.json").is_file():
            raise ModelLoadError(f"{p} is not a diffusers model folder (no model_index.json)")
        family, sched, cls_name = _folder_family(p)
    else:
        raise ModelLoadError(f"model not found: {p}")
    info = {"model": str(p), "family": family, "pipeline": cls_name, "scheduler": sched.get("_class_name", "?"),
            "guidance": GUIDANCE_MEANING[family], "resolution": (int(height), int(width)), "starts": []}
    if family in ("sd3", "flux", "flux-schnell"):
        info["prediction"] = "flow velocity v = eps - x0 on x_s = (1 - s)*x0 + s*eps"
        if sched.get("use_dynamic_shifting", False):
            info["schedule"] = (f"Flux shift, dynamic: mu = {dynamic_mu(sched, height, width):.4f} at {width}x{height} "
                                f"(base_shift {sched.get('base_shift', 0.5)} at {sched.get('base_image_seq_len', 256)} "
                                f"tokens .. max_shift {sched.get('max_shift', 1.15)} at {sched.get('max_image_seq_len', 4096)})")
        else:
            info["schedule"] = f"SD3-style shift {float(sched.get('shift', 1.0)):g} (s = a*t / (1 + (a - 1)*t))"
        for scale in T0_SCALES:
            fs = schedule_from_config(sched, height, width, t0_scale=scale)
            info["starts"] += [fs.describe_t0(t0) for t0 in t0s]
        info["default_guidance"] = DEFAULT_GUIDANCE[family]
        return info
    import diffusers  # the scheduler class builds the alphas_cumprod table from its config (no weights)

    cls = getattr(diffusers, sched.get("_class_name", "DDIMScheduler"), diffusers.DDIMScheduler)
    table = DiscreteSchedule.from_alphas_cumprod(cls.from_config(sched).alphas_cumprod.double())
    info["prediction"] = sched.get("prediction_type", "epsilon")
    info["schedule"] = (f"discrete VP, T = {table.num_timesteps}, {sched.get('beta_schedule', 'linear')} betas "
                        f"{sched.get('beta_start')}..{sched.get('beta_end')}; sigma(t0) = sigma of timestep round(t0*T) - 1")
    for t0 in t0s:
        sig = table.t0_to_sigma(t0)
        info["starts"].append({"t0": t0, "t0_scale": "model", "model_time": t0, "flow_sigma": None, "sigma": sig,
                               "log_snr": -2.0 * math.log(sig)})
    info["default_guidance"] = 7.5
    return info


def format_info(info: dict) -> str:
    """The human-readable report of :func:`describe_model`."""
    h, w = info["resolution"]
    lines = [f"model:      {info['model']}", f"family:     {info['family']} ({info['pipeline'] or 'single file'})",
             f"scheduler:  {info['scheduler']}", f"prediction: {info['prediction']}", f"schedule:   {info['schedule']}",
             f"guidance:   {info['guidance']}", "",
             "where SDEdit starts for each t0 (flow s = fraction of noise in x_s; sigma = engine noise level; "
             "log-SNR = -2 log sigma):",
             f"  {'t0':>5} {'t0-scale':>9} {'model t':>8} {'flow s':>8} {'sigma':>9} {'log-SNR':>8}"]
    for st in info["starts"]:
        s = "-" if st["flow_sigma"] is None else f"{st['flow_sigma']:.4f}"
        lines.append(f"  {st['t0']:>5g} {st['t0_scale']:>9} {st['model_time']:>8.4f} {s:>8} {st['sigma']:>9.4f} "
                     f"{st['log_snr']:>8.3f}")
    if info["family"].startswith("flux") and "dynamic" in info["schedule"]:
        lines.append(f"  (Flux's shift depends on the image size; shown for {w}x{h}, set --width/--height)")
    return "\n".join(lines)
