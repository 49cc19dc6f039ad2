"""Genomic regions: records, readers, intervals and annotation sources.

The ground floor every stage stands on: ingestion, SAE training, the classifier, steering
and correlation all read regions the same way, so the same input fails the same way
everywhere.
"""
