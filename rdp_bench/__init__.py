"""rdp-bench: rate-distortion-perception benchmarking of learned image codecs on real bitstreams."""

__version__ = "0.1.0"

import warnings as _warnings

# compressai imports torch_geometric, whose import calls torch.jit.script, which torch >= 2.5 deprecates
# with a FutureWarning on every command. Not ours to fix and not actionable for a user: silence exactly it.
_warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
