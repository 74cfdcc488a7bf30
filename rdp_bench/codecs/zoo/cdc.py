"""Rate points of ``cdc``: the bundled tiny checkpoints in ``rdp_bench/weights/cdc/`` (larger λ = lower rate).

Ids 0-3 are the list positions these files had when all four were present (sorted by descending λ),
so streams written before the table existed keep their meaning. A retrained file has another sha256:
put its new sum here. Listed by rate: λ = 0.0015's rate path came out above λ = 0.0004's in its short
first training (0.51 against 0.42 bpp on ``samples``), and the decoder recipe keeps each parent's rate.
"""

from rdp_bench.codecs.zoo import WeightsEntry, check_table

TABLE = check_table("cdc", [
    WeightsEntry(0, "lambda0.032", "cdc-tiny-l0p032.safetensors", {"lambda": 0.032},
                 "8b802f01a9cc5920eeab8ddc6c72d78b59312cc0a16d8294329548def69374ff"),
    WeightsEntry(1, "lambda0.003", "cdc-tiny-l0p003.safetensors", {"lambda": 0.003},
                 "c54e4862b4749eb97e43a55053a42b91f4f95297391eb67bb7120019541ca0b1"),
    WeightsEntry(3, "lambda0.0004", "cdc-tiny-l0p0004.safetensors", {"lambda": 0.0004},
                 "26dc0a7b356a36611ccd908f6dec158f532a1b3e706596afb9c3706102795665"),
    WeightsEntry(2, "lambda0.0015", "cdc-tiny-l0p0015.safetensors", {"lambda": 0.0015},
                 "9d2a907e4db474fd0ab81cf5f1a40e3d19a4fdf2241b3a140bf3e446258f37f3"),
])
