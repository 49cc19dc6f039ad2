// Lookup indexes for the access paths the writer, the analyses and Browser queries use.
// Features are looked up by their SAE alone (the writer's feature list per batch, the
// per-SAE queries of queries/), never by (sae, index): hence a single-property index.
CREATE INDEX feature_sae IF NOT EXISTS FOR (f:Feature) ON (f.sae);
CREATE INDEX sequence_locus IF NOT EXISTS FOR (s:Sequence) ON (s.chrom, s.start);
CREATE INDEX annotation_kind IF NOT EXISTS FOR (a:Annotation) ON (a.kind, a.name);
