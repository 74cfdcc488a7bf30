"""Rate points of ``msillm``: the six released NeuralCompression models (hubconf.py / zoo/_msillm.py).

Id = quality - 1, the position each had when all six files were present. NeuralCompression publishes
no checksums for these files, so none is pinned: the sha256 of the file loaded is the checkpoint id.
"""

from rdp_bench.codecs.zoo import WeightsEntry, check_table

RELEASE_URL = "https://dl.fbaipublicfiles.com/NeuralCompression/2023-muckley-msillm/"
LICENSE = "CC-BY-NC 4.0 (Meta Platforms)"

TABLE = check_table("msillm", [
    WeightsEntry(q - 1, f"quality_{q}", f"msillm_target_{bpp:g}bpp.ckpt", {"target_bpp": bpp},
                 url=f"{RELEASE_URL}msillm_target_{bpp:g}bpp.ckpt", license=LICENSE)
    for q, bpp in enumerate((0.035, 0.07, 0.14, 0.3, 0.45, 0.9), start=1)
])
