"""``bmshj2018-factorized`` and ``bmshj2018-factorized-msssim``: CompressAI's pretrained bmshj2018-factorized
(Ballé et al., ICLR 2018; fully factorized prior, no hyperprior), trained for MSE and for MS-SSIM, one rate
point per zoo quality (``rdp_bench/codecs/zoo/compressai.py``).

Wiring: ŷ alone, coded under the per-channel entropy bottleneck: ``FactorizedParts``.
Weights, download policy and coding: ``rdp_bench/codecs/compressai_zoo.py``.
"""

from __future__ import annotations

from compressai.models import FactorizedPrior
from torch import nn

from rdp_bench.codecs.compressai_zoo import CompressAIZoo
from rdp_bench.codecs.hyperprior_coder import FactorizedParts
from rdp_bench.codecs.zoo import WeightsEntry


class BMSHJ2018Factorized(CompressAIZoo):
    name = "bmshj2018-factorized"
    description = "CompressAI zoo bmshj2018-factorized, MSE-trained (Ballé et al., ICLR 2018)"
    architecture = "bmshj2018-factorized"
    parts = FactorizedParts

    def build(self, entry: WeightsEntry) -> nn.Module:
        return FactorizedPrior(entry.params["N"], entry.params["M"])


class BMSHJ2018FactorizedMSSSIM(BMSHJ2018Factorized):
    name = "bmshj2018-factorized-msssim"
    description = "CompressAI zoo bmshj2018-factorized, MS-SSIM-trained (Ballé et al., ICLR 2018)"
    metric = "ms-ssim"


__all__ = ["BMSHJ2018Factorized", "BMSHJ2018FactorizedMSSSIM"]
