"""Rate points of ``hific``: the bundled tiny checkpoints in ``rdp_bench/weights/hific/``.

Ids 0-3 are the list positions these files had when all four were present, so streams written before
the table existed keep their meaning. A retrained file has another sha256: put its new sum here.
"""

from rdp_bench.codecs.zoo import WeightsEntry, check_table

TABLE = check_table("hific", [
    WeightsEntry(0, "0.1bpp", "hific_tiny_0p10bpp.safetensors", {"target_bpp": 0.1},
                 "85433af82fb7d3d4ed5cac2e7f9abc7ccd120f5c8eb0673da8a2e9af7d4a48a1"),
    WeightsEntry(1, "0.2bpp", "hific_tiny_0p20bpp.safetensors", {"target_bpp": 0.2},
                 "9f65625985858d1d9622433041a4f302c38d52bd2544cef21e93b029ac94e4f4"),
    WeightsEntry(2, "0.4bpp", "hific_tiny_0p40bpp.safetensors", {"target_bpp": 0.4},
                 "81e4166042b0a2ece3cbc4368a3d2eeb2a4ae8f624c0c166ac8d4afaca044eeb"),
    WeightsEntry(3, "0.8bpp", "hific_tiny_0p80bpp.safetensors", {"target_bpp": 0.8},
                 "95b280dee60497573d9dca09c8ab910090797f8fbad3555a37a8b71b0e9f485f"),
])
