"""The built-in model: a small diffusion model of procedural landscapes, trained here and shipped in the package.

- :mod:`.domain` — the seeded landscape generator with exact object metadata (numpy only);
- :mod:`.spec` — schedule, UNet config and the pixel-unshuffle "latent" (torch only);
- :mod:`.detect` — the sun detector used to measure drag landing (torch only);
- :mod:`.realism` — the domain classifier behind the realism metric (torch + PIL strokes);
- :mod:`.model` — :class:`~.model.BuiltinPipeline`, the shipped UNet as an ``SDEditPipeline``
  (imports diffusers when loading).

Training: ``scripts/train_builtin.py``; measurements: ``bench/quality.py`` and BENCHMARKS.md.
"""
