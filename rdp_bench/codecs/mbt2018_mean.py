"""``mbt2018-mean`` and ``mbt2018-mean-msssim``: CompressAI's pretrained mbt2018-mean (Minnen et al., NeurIPS
2018; mean-scale hyperprior without the context model), trained for MSE and for MS-SSIM, one rate point per
zoo quality (``rdp_bench/codecs/zoo/compressai.py``).

Wiring: Gaussian ŷ given means and scales from the hyperprior: ``HyperpriorParts`` as it is.
Weights, download policy and coding: ``rdp_bench/codecs/compressai_zoo.py``.
"""

from __future__ import annotations

from compressai.models import MeanScaleHyperprior
from torch import nn

from rdp_bench.codecs.compressai_zoo import CompressAIZoo
from rdp_bench.codecs.hyperprior_coder import HyperpriorParts
from rdp_bench.codecs.zoo import WeightsEntry


class MBT2018Mean(CompressAIZoo):
    name = "mbt2018-mean"
    description = "CompressAI zoo mbt2018-mean, MSE-trained (Minnen et al., NeurIPS 2018)"
    architecture = "mbt2018-mean"
    parts = HyperpriorParts

    def build(self, entry: WeightsEntry) -> nn.Module:
        return MeanScaleHyperprior(entry.params["N"], entry.params["M"])


class MBT2018MeanMSSSIM(MBT2018Mean):
    name = "mbt2018-mean-msssim"
    description = "CompressAI zoo mbt2018-mean, MS-SSIM-trained (Minnen et al., NeurIPS 2018)"
    metric = "ms-ssim"


__all__ = ["MBT2018Mean", "MBT2018MeanMSSSIM"]
