"""Shared pieces of the conditional-diffusion codecs (CDC, CorrDiff).

* ``schedule``  - the cosine noise schedule (8193 training steps, as CDC).
* ``sampler``   - a DDIM sampler kept apart from the network, plus seeded initial noise.
* ``unet``      - the conditional UNet denoiser (CDC-official state-dict layout; a ``tiny`` config).
* ``compressor``- the ResnetCompressor analysis/synthesis + FlexiblePrior hyperprior that produces
  the multi-scale context, with real range coding of its latents.
* ``model``     - ``CDCModel``: compressor + denoiser + schedule buffers in the official layout,
  its training loss, and loading of official ``{"ema": ...}`` files.
"""
