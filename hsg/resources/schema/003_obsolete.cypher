// Indexes earlier versions created that no query uses; dropped on servers that have them and
// a no-op elsewhere (IF EXISTS), so `hsg db init` stays safe to run any number of times.
// sequence_ingest_run: on Sequence.run, a property nothing writes (the run is on ENCODED_BY).
DROP INDEX sequence_ingest_run IF EXISTS;
// feature_sae_index: on (Feature.sae, Feature.index); lookups give the SAE only, which a
// composite index does not serve (replaced by feature_sae).
DROP INDEX feature_sae_index IF EXISTS;
