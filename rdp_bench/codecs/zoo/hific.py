"""Rate points of ``hific``: the bundled tiny checkpoints in ``rdp_bench/weights/hific/``.

Ids 0-3 are the list positions these files had when all four were present, so streams written before
the table existed keep their meaning. A retrained file has another sha256: put its new sum here.
"""

from rdp_bench.codecs.zoo import WeightsEntry, check_table

TABLE = check_table("hific", [
    WeightsEntry(0, "0.1bpp", "hific_tiny_0p10bpp.safetensors", {"target_bpp": 0.1},
                 "669f29f112d069b1f7a32a51495decb6084e217874e11caf83eda0e97e50dad5"),
    WeightsEntry(1, "0.2bpp", "hific_tiny_0p20bpp.safetensors", {"target_bpp": 0.2},
                 "ee781f74d91279a22a6ca7c405a53b52ef202cad955c1ea683b9485fd9960f0d"),
    WeightsEntry(2, "0.4bpp", "hific_tiny_0p40bpp.safetensors", {"target_bpp": 0.4},
                 "94f6723a3d09e10662d88b5414fd33691df250de1c9d744ca967363c646ce6e8"),
    WeightsEntry(3, "0.8bpp", "hific_tiny_0p80bpp.safetensors", {"target_bpp": 0.8},
                 "1bd715e6b3cfd0dc33f88edc90aedbb2d12be9ba65a9b87875df3c244b3a6707"),
])
