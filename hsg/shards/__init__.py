"""Activation shards: the Parquet files between encoding and loading (see docs/scale-out.md).

A shard set is a folder: ``manifest.json`` (model, SAE, hashes, parameters; written before
any shard) and, per shard ``i``, ``sequences-i.parquet``, ``activations-i.parquet``,
``annotations-i.parquet`` and the marker ``shard-i.json`` written last. A shard whose marker
is present and whose files match the marker's hashes is complete; anything else is redone
by the encoder and refused by the loader. This package is the format only (pyarrow): it
knows nothing of encoders, SAEs or Neo4j.
"""
