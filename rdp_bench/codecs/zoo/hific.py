"""Rate points of ``hific``: the bundled tiny checkpoints in ``rdp_bench/weights/hific/``.

Ids 0-3 are the list positions these files had when all four were present, so streams written before
the table existed keep their meaning. A retrained file has another sha256: put its new sum here.
"""

from rdp_bench.codecs.zoo import WeightsEntry, check_table

TABLE = check_table("hific", [
    WeightsEntry(0, "0.1bpp", "hific_tiny_0p10bpp.safetensors", {"target_bpp": 0.1},
                 "96219f7b0cd7cfbc30b8d2c0e043355427bcfe6e87e345e5d2648c9b5a6d967e"),
    WeightsEntry(1, "0.2bpp", "hific_tiny_0p20bpp.safetensors", {"target_bpp": 0.2},
                 "2849aefa6090fe4120562b42bfbe79142dde78443c7d360845052c000a7860e2"),
    WeightsEntry(2, "0.4bpp", "hific_tiny_0p40bpp.safetensors", {"target_bpp": 0.4},
                 "81e4166042b0a2ece3cbc4368a3d2eeb2a4ae8f624c0c166ac8d4afaca044eeb"),
    WeightsEntry(3, "0.8bpp", "hific_tiny_0p80bpp.safetensors", {"target_bpp": 0.8},
                 "95b280dee60497573d9dca09c8ab910090797f8fbad3555a37a8b71b0e9f485f"),
])
