"""``mbt2018`` and ``mbt2018-msssim``: CompressAI's pretrained mbt2018 (Minnen et al., NeurIPS 2018; joint
autoregressive and hierarchical priors), trained for MSE and for MS-SSIM, one rate point per zoo quality
(``rdp_bench/codecs/zoo/compressai.py``).

Wiring: the mean-scale hyperprior plus a causal 5x5 context model, so ŷ is coded serially: ``ContextParts``.
Weights, download policy and coding: ``rdp_bench/codecs/compressai_zoo.py``.
"""

from __future__ import annotations

from compressai.models import JointAutoregressiveHierarchicalPriors
from torch import nn

from rdp_bench.codecs.compressai_zoo import CompressAIZoo
from rdp_bench.codecs.hyperprior_coder import ContextParts
from rdp_bench.codecs.zoo import WeightsEntry


class MBT2018(CompressAIZoo):
    name = "mbt2018"
    description = "CompressAI zoo mbt2018, MSE-trained (Minnen et al., NeurIPS 2018)"
    architecture = "mbt2018"
    parts = ContextParts

    def build(self, entry: WeightsEntry) -> nn.Module:
        return JointAutoregressiveHierarchicalPriors(entry.params["N"], entry.params["M"])


class MBT2018MSSSIM(MBT2018):
    name = "mbt2018-msssim"
    description = "CompressAI zoo mbt2018, MS-SSIM-trained (Minnen et al., NeurIPS 2018)"
    metric = "ms-ssim"


__all__ = ["MBT2018", "MBT2018MSSSIM"]
