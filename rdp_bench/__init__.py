"""rdp-bench: rate-distortion-perception benchmarking of learned image codecs on real bitstreams."""

__version__ = "0.1.0"
