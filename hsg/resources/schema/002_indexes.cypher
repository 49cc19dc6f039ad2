// Lookup indexes for the access paths the analysis and Browser queries use.
CREATE INDEX feature_sae_index IF NOT EXISTS FOR (f:Feature) ON (f.sae, f.index);
CREATE INDEX sequence_locus IF NOT EXISTS FOR (s:Sequence) ON (s.chrom, s.start);
CREATE INDEX sequence_ingest_run IF NOT EXISTS FOR (s:Sequence) ON (s.run);
CREATE INDEX annotation_kind IF NOT EXISTS FOR (a:Annotation) ON (a.kind, a.name);
