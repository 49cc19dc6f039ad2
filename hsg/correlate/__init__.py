"""The correlation baseline: SAE feature activity against BED tracks, layer by layer.

`tracks` turns BED tracks into per-token coverage aligned with the encoder's tokens,
`stats` scores every feature against every track with matrix products, `run` drives the
layers and writes tables (and, optionally, the graph), `plots` draws the per-layer boxes,
`cli` is `hsg correlate`.
"""
