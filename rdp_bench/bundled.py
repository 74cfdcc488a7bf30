"""Where the bundled checkpoints live: one torch-free place that the codecs and the training jobs both read
(the training configs must stay importable without torch for ``rdp-bench train ... --help``)."""

from pathlib import Path

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
CDC_WEIGHTS_DIR = WEIGHTS_ROOT / "cdc"
HYPERPRIOR_WEIGHTS_DIR = WEIGHTS_ROOT / "hyperprior"
#: the bundled hyperprior's file stem: the ``hyperprior`` codec, and CorrDiff's frozen compressor + D
HYPERPRIOR_DEFAULT = "hyperprior-vr-n64m128"
