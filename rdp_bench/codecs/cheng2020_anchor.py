"""``cheng2020-anchor`` and ``cheng2020-anchor-msssim``: CompressAI's pretrained cheng2020-anchor (Cheng et
al., CVPR 2020; anchor, with CompressAI's Gaussian context model), trained for MSE and for MS-SSIM, one rate
point per zoo quality (``rdp_bench/codecs/zoo/compressai.py``).

Wiring: mbt2018's context model and entropy parameters on residual transforms: ``ContextParts``.
Weights, download policy and coding: ``rdp_bench/codecs/compressai_zoo.py``.
"""

from __future__ import annotations

from compressai.models import Cheng2020Anchor as CompressAICheng2020Anchor
from torch import nn

from rdp_bench.codecs.compressai_zoo import CompressAIZoo
from rdp_bench.codecs.hyperprior_coder import ContextParts
from rdp_bench.codecs.zoo import WeightsEntry


class Cheng2020Anchor(CompressAIZoo):
    name = "cheng2020-anchor"
    description = "CompressAI zoo cheng2020-anchor, MSE-trained (Cheng et al., CVPR 2020)"
    architecture = "cheng2020-anchor"
    parts = ContextParts

    def build(self, entry: WeightsEntry) -> nn.Module:
        return CompressAICheng2020Anchor(entry.params["N"])


class Cheng2020AnchorMSSSIM(Cheng2020Anchor):
    name = "cheng2020-anchor-msssim"
    description = "CompressAI zoo cheng2020-anchor, MS-SSIM-trained (Cheng et al., CVPR 2020)"
    metric = "ms-ssim"


__all__ = ["Cheng2020Anchor", "Cheng2020AnchorMSSSIM"]
