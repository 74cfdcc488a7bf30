"""Training recipes for the bundled learned-codec checkpoints (HiFiC, CDC, CorrDiff)."""
