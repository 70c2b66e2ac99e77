"""``SDEditSigmas`` and ``SDEditSampler``: SDEdit as pieces for SamplerCustom / SamplerCustomAdvanced."""

from __future__ import annotations

import torch
from comfy_api.v0_0_2 import io

from .backend import SDEditKSampler, model_schedule
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
                "'denoise', the start does not depend on the scheduler."
            ),
            inputs=inputs("model", "t0", "steps", "spacing", model={"tooltip": "The model whose noise schedule is used."},
                          steps={"tooltip": "Number of steps from t0 to 0."}),
            outputs=[io.Sigmas.Output("SIGMAS", display_name="sigmas", tooltip="steps+1 descending sigmas ending at 0.")],
        )

    @classmethod
    def execute(cls, model, t0, steps, spacing) -> io.NodeOutput:
        sigmas = model_schedule(model).sigma_grid(t0, steps, spacing)
        return io.NodeOutput(sigmas.to(torch.float32))


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
