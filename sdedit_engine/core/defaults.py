"""The one set of sampling defaults for the engine, the ComfyUI nodes, the diffusers pipeline and the CLI
(plain constants: importing this module loads nothing, so ``sdedit --help`` stays fast).

``dpmpp_2m_sde`` on the ``exponential`` grid (σ evenly spaced in log σ between σ(t0) and σ_min) matches
the exact SDEdit law with 10 model calls on the Gaussian-mixture benchmarks (BENCHMARKS.md §2); the
previous default grid, uniform in timestep, ended with one step of ~1.7 in log σ that left the 20-step
spread about 20 % short. 20 steps stay the default for real models, with margin.
"""

DEFAULT_SAMPLER = "dpmpp_2m_sde"
# The registry's names in its order (core/samplers.py checks its table against this at import), here so
# that argument parsers and ``--help`` can list them without importing torch.
SAMPLER_NAMES = ("ddpm", "euler_maruyama", "dpmpp_2m_sde", "ddim", "dpmpp_2m")
DEFAULT_STEPS = 20
SPACINGS = ("exponential", "uniform", "karras")
DEFAULT_SPACING = "exponential"

# SDE-Drag: reverse steps from t0 per drag iteration (each costs 2 x steps model calls, 4 x steps image
# evaluations with CFG). The paper runs 120 (0.6 of a 200-step grid = 480 evaluations per iteration); on the
# shipped landscape model 30 steps land as close to the target as 120 (BENCHMARKS.md §7) at a quarter of the cost.
DEFAULT_DRAG_STEPS = 30
