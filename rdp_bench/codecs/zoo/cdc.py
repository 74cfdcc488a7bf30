"""Rate points of ``cdc``: the bundled tiny checkpoints in ``rdp_bench/weights/cdc/`` (larger λ = lower rate).

Ids 0-3 are the list positions these files had when all four were present (sorted by descending λ),
so streams written before the table existed keep their meaning. A retrained file has another sha256:
put its new sum here. Listed by rate: λ = 0.0015's rate path came out above λ = 0.0004's in its short
first training (0.51 against 0.42 bpp on ``samples``), and the decoder recipe keeps each parent's rate.
"""

from rdp_bench.codecs.zoo import WeightsEntry, check_table

TABLE = check_table("cdc", [
    WeightsEntry(0, "lambda0.032", "cdc-tiny-l0p032.safetensors", {"lambda": 0.032},
                 "77a3e22fc26925f5ab28c09273b2e5c1edb21af15293ff4e6fd62d37c182d5e1"),
    WeightsEntry(1, "lambda0.003", "cdc-tiny-l0p003.safetensors", {"lambda": 0.003},
                 "6af4c956c3f91fd88779bdeb2475411907809a90f3a851c5d8b10cb7c2b09046"),
    WeightsEntry(3, "lambda0.0004", "cdc-tiny-l0p0004.safetensors", {"lambda": 0.0004},
                 "51dca6b8b3a9d6603c3d1ba87566285fe3fc8665611d9f511f317fad4540d96f"),
    WeightsEntry(2, "lambda0.0015", "cdc-tiny-l0p0015.safetensors", {"lambda": 0.0015},
                 "e830f4768df7aa57c3df29ecefe939cd76cb86339efc86f60aa0661b156e51cc"),
])
