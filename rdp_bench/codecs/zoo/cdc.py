"""Rate points of ``cdc``: the bundled tiny checkpoints in ``rdp_bench/weights/cdc/`` (larger λ = lower rate).

Ids 0-3 are the list positions these files had when all four were present (sorted by descending λ),
so streams written before the table existed keep their meaning. A retrained file has another sha256:
put its new sum here.
"""

from rdp_bench.codecs.zoo import WeightsEntry, check_table

TABLE = check_table("cdc", [
    WeightsEntry(0, "lambda0.032", "cdc-tiny-l0p032.safetensors", {"lambda": 0.032},
                 "85da44ef70c48951c5164d93def4026258e38f8be26a6ed8b39ac529d46c2da0"),
    WeightsEntry(1, "lambda0.003", "cdc-tiny-l0p003.safetensors", {"lambda": 0.003},
                 "8b8ef5c2f23469bb9b2d4704dc3ad5d878e52ce957232c5c37cf9f2b20d9d4e0"),
    WeightsEntry(2, "lambda0.0015", "cdc-tiny-l0p0015.safetensors", {"lambda": 0.0015},
                 "a35edd161cb4440d56382f7ef8e0e43bccf9f2940e44f1d2dd225a0f73d5f494"),
    WeightsEntry(3, "lambda0.0004", "cdc-tiny-l0p0004.safetensors", {"lambda": 0.0004},
                 "19737176bd52e6f9106dd1436013c0ec5c177ee1091d8a32a5af2e1635b1a766"),
])
