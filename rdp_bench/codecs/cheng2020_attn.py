"""``cheng2020-attn`` and ``cheng2020-attn-msssim``: CompressAI's pretrained cheng2020-attn (Cheng et al., CVPR
2020; attention modules, with CompressAI's Gaussian context model), trained for MSE and for MS-SSIM, one
rate point per zoo quality (``rdp_bench/codecs/zoo/compressai.py``).

Wiring: cheng2020-anchor with attention blocks: ``ContextParts``.
Weights, download policy and coding: ``rdp_bench/codecs/compressai_zoo.py``.
"""

from __future__ import annotations

from compressai.models import Cheng2020Attention as CompressAICheng2020Attention
from torch import nn

from rdp_bench.codecs.compressai_zoo import CompressAIZoo
from rdp_bench.codecs.hyperprior_coder import ContextParts
from rdp_bench.codecs.zoo import WeightsEntry


class Cheng2020Attention(CompressAIZoo):
    name = "cheng2020-attn"
    description = "CompressAI zoo cheng2020-attn, MSE-trained (Cheng et al., CVPR 2020)"
    architecture = "cheng2020-attn"
    parts = ContextParts

    def build(self, entry: WeightsEntry) -> nn.Module:
        return CompressAICheng2020Attention(entry.params["N"])


class Cheng2020AttentionMSSSIM(Cheng2020Attention):
    name = "cheng2020-attn-msssim"
    description = "CompressAI zoo cheng2020-attn, MS-SSIM-trained (Cheng et al., CVPR 2020)"
    metric = "ms-ssim"


__all__ = ["Cheng2020Attention", "Cheng2020AttentionMSSSIM"]
