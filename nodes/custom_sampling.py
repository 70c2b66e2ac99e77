"""``SDEditSigmas`` and ``SDEditSampler``: SDEdit as pieces for SamplerCustom / SamplerCustomAdvanced."""

from __future__ import annotations

import torch
from comfy_api.v0_0_2 import io

from ..sdedit_engine.core.samplers import SAMPLER_NAMES
from ..sdedit_engine.core.schedules import SPACINGS
from ..sdedit_engine.core.sdedit import KNOWN_NOISE_MODES
from .backend import SDEditKSampler, model_schedule
from .sdedit_nodes import T0_TOOLTIP

CATEGORY = "SDEdit/custom_sampling"


class SDEditSigmas(io.ComfyNode):
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
            inputs=[
                io.Model.Input("model", tooltip="The model whose noise schedule is used."),
                io.Float.Input("t0", default=0.5, min=0.0, max=1.0, step=0.01, tooltip=T0_TOOLTIP),
                io.Int.Input("steps", default=20, min=1, max=1000, tooltip="Number of steps from t0 to 0."),
                io.Combo.Input("spacing", options=list(SPACINGS), default="uniform", tooltip="uniform in timestep (paper) or karras (more steps at low noise)."),
            ],
            outputs=[io.Sigmas.Output("SIGMAS", display_name="sigmas", tooltip="steps+1 descending sigmas ending at 0.")],
        )

    @classmethod
    def execute(cls, model, t0, steps, spacing) -> io.NodeOutput:
        sigmas = model_schedule(model).sigma_grid(t0, steps, spacing)
        return io.NodeOutput(sigmas.to(torch.float32))


class SDEditSampler(io.ComfyNode):
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
            inputs=[
                io.Combo.Input("sampler", options=list(SAMPLER_NAMES), default="dpmpp_2m_sde", tooltip="dpmpp_2m_sde (accurate at 20-30 steps), ddpm (the paper's), euler_maruyama (the paper's Algorithm 1), or the ODE twins ddim / dpmpp_2m."),
                io.Int.Input("repeats", default=1, min=1, max=10, tooltip="K: re-noise to the first sigma and solve again, K times in all."),
                io.Combo.Input("known_noise", options=list(KNOWN_NOISE_MODES), default="fresh", tooltip="Re-noise the kept area with fresh noise at each step, or with one fixed tensor per repeat."),
            ],
            outputs=[io.Sampler.Output("SAMPLER", display_name="sampler")],
        )

    @classmethod
    def execute(cls, sampler, repeats, known_noise) -> io.NodeOutput:
        return io.NodeOutput(SDEditKSampler(sampler, repeats, known_noise))
