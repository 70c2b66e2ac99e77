"""``SDEditSigmas`` and ``SDEditSampler``: SDEdit as pieces for SamplerCustom / SamplerCustomAdvanced."""

from __future__ import annotations

import torch
from comfy_api.v0_0_2 import io, ui

from .backend import SDEditKSampler, model_schedule, native_sigma_grid
from .inputs import SDEditNode, inputs

CATEGORY = "SDEdit/custom_sampling"


class SDEditSigmas(SDEditNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SDEditSigmas",
            display_name="SDEdit Sigmas (exact t0)",
            category=CATEGORY,
            description=(
                "Sigmas for SamplerCustom / SamplerCustomAdvanced that start exactly at the SDEdit noise level t0 "
                "(sigma of timestep round(t0*1000)-1) and reach 0 in 'steps' steps. Unlike BasicScheduler's "
                "'denoise', the start does not depend on the scheduler. On flow-matching models (SD3, Flux, ...) the "
                "sigmas are ComfyUI's flow sigmas in [0, 1] (shift included), starting at percent_to_sigma(1 - t0)."
            ),
            inputs=inputs("model", "t0", "steps", "spacing", "t0_scale", model={"tooltip": "The model whose noise schedule is used."},
                          steps={"tooltip": "Number of steps from t0 to 0."}),
            outputs=[io.Sigmas.Output("SIGMAS", display_name="sigmas", tooltip="steps+1 descending sigmas ending at 0.")],
        )

    @classmethod
    def execute(cls, model, t0, steps, spacing, t0_scale="model") -> io.NodeOutput:
        from .sdedit_nodes import start_info

        sigmas = native_sigma_grid(model_schedule(model, t0_scale or "model"), t0, steps, spacing)
        return io.NodeOutput(sigmas.to(torch.float32), ui=ui.PreviewText(start_info(model, t0, t0_scale)))


class SDEditSampler(SDEditNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SDEditSampler",
            display_name="SDEdit Sampler",
            category=CATEGORY,
            description=(
                "A SAMPLER for SamplerCustom / SamplerCustomAdvanced (any guider) that runs SDEdit: the engine's "
                "reverse-SDE samplers, K repeats, and the SDEdit mask rule for latents with a noise mask "
                "(SetLatentNoiseMask): the kept area is re-noised to the current sigma at every step and returned "
                "exactly. Feed it SDEdit Sigmas and a VAE-encoded guide."
            ),
            inputs=inputs("sampler", "repeats", "known_noise",
                          repeats={"tooltip": "K: re-noise to the first sigma and solve again, K times in all."}),
            outputs=[io.Sampler.Output("SAMPLER", display_name="sampler")],
        )

    @classmethod
    def execute(cls, sampler, repeats, known_noise) -> io.NodeOutput:
        return io.NodeOutput(SDEditKSampler(sampler, repeats, known_noise))
