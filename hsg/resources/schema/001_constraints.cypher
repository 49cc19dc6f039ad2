// Uniqueness constraints: every node type has one stable key, so batched MERGE writes are
// idempotent and a second ingest of the same input changes nothing.
// Applied by `hsg db init`; safe to run any number of times (IF NOT EXISTS).
CREATE CONSTRAINT sequence_id IF NOT EXISTS FOR (s:Sequence) REQUIRE s.id IS UNIQUE;
CREATE CONSTRAINT feature_id IF NOT EXISTS FOR (f:Feature) REQUIRE f.id IS UNIQUE;
CREATE CONSTRAINT label_name IF NOT EXISTS FOR (l:Label) REQUIRE l.name IS UNIQUE;
CREATE CONSTRAINT annotation_id IF NOT EXISTS FOR (a:Annotation) REQUIRE a.id IS UNIQUE;
CREATE CONSTRAINT sae_id IF NOT EXISTS FOR (x:SAE) REQUIRE x.id IS UNIQUE;
CREATE CONSTRAINT model_id IF NOT EXISTS FOR (m:Model) REQUIRE m.id IS UNIQUE;
CREATE CONSTRAINT ingest_run_id IF NOT EXISTS FOR (r:IngestRun) REQUIRE r.id IS UNIQUE;
