"""hsg: read what genomic language models learned, as a Neo4j knowledge graph.

Regions are encoded through a Nucleotide Transformer and a sparse autoencoder; the
sequence-to-feature activations are written into Neo4j, analysed there with Graph Data
Science, and the selected features are steered through the SAE decoder.
"""

__version__ = "0.1.0"
