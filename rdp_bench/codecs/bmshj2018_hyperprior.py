"""``bmshj2018-hyperprior`` and ``bmshj2018-hyperprior-msssim``: CompressAI's pretrained bmshj2018-hyperprior
(Ballé et al., ICLR 2018; scale hyperprior), trained for MSE and for MS-SSIM, one rate point per zoo quality
(``rdp_bench/codecs/zoo/compressai.py``).

Wiring: zero-mean Gaussian ŷ given scales from the hyperprior (h_a sees |y|): ``ScaleHyperpriorParts``.
Weights, download policy and coding: ``rdp_bench/codecs/compressai_zoo.py``.
"""

from __future__ import annotations

from compressai.models import ScaleHyperprior
from torch import nn

from rdp_bench.codecs.compressai_zoo import CompressAIZoo
from rdp_bench.codecs.hyperprior_coder import ScaleHyperpriorParts
from rdp_bench.codecs.zoo import WeightsEntry


class BMSHJ2018Hyperprior(CompressAIZoo):
    name = "bmshj2018-hyperprior"
    description = "CompressAI zoo bmshj2018-hyperprior, MSE-trained (Ballé et al., ICLR 2018)"
    architecture = "bmshj2018-hyperprior"
    parts = ScaleHyperpriorParts

    def build(self, entry: WeightsEntry) -> nn.Module:
        return ScaleHyperprior(entry.params["N"], entry.params["M"])


class BMSHJ2018HyperpriorMSSSIM(BMSHJ2018Hyperprior):
    name = "bmshj2018-hyperprior-msssim"
    description = "CompressAI zoo bmshj2018-hyperprior, MS-SSIM-trained (Ballé et al., ICLR 2018)"
    metric = "ms-ssim"


__all__ = ["BMSHJ2018Hyperprior", "BMSHJ2018HyperpriorMSSSIM"]
