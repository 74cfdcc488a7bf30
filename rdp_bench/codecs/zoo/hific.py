"""Rate points of ``hific``: the bundled tiny checkpoints in ``rdp_bench/weights/hific/``.

Ids 0-3 are the list positions these files had when all four were present, so streams written before
the table existed keep their meaning. A retrained file has another sha256: put its new sum here.
"""

from rdp_bench.codecs.zoo import WeightsEntry, check_table

TABLE = check_table("hific", [
    WeightsEntry(0, "0.1bpp", "hific_tiny_0p10bpp.safetensors", {"target_bpp": 0.1},
                 "5b040ffd056affbf022f9390672510a01152ab7ffd4830c706c39a217799a25b"),
    WeightsEntry(1, "0.2bpp", "hific_tiny_0p20bpp.safetensors", {"target_bpp": 0.2},
                 "d3a81659d9ed07ee773bc501beed82dda9ac6f2bcaee669b3c3c601393ed6836"),
    WeightsEntry(2, "0.4bpp", "hific_tiny_0p40bpp.safetensors", {"target_bpp": 0.4},
                 "8fbd06d3dda1855bc4f46e13e5d260ad827ecdd5c1b4d726f06e93457f7b8595"),
    WeightsEntry(3, "0.8bpp", "hific_tiny_0p80bpp.safetensors", {"target_bpp": 0.8},
                 "dcb1be8a33910076a29e62f10e6a90d773f4c9f5bfc00b8e679eecc2ebf79861"),
])
