// description: Intervention targets: features ranked by the log2 fold change of their normalised PageRank between two labels (from `hsg analyze pagerank`), log2((up + pseudo_count) / (down + pseudo_count)). A feature scored in only one label counts 0 in the other and is flagged one_sided; features whose support (sequences) is below min_support in both labels are left out. `candidates` is the number ranked before the top cut.
// params: sae, up, down, min_support, pseudo_count, top
MATCH (l:Label)<-[c:CENTRALITY]-(f:Feature)
WHERE l.name IN [$up, $down] AND c.sae = $sae
WITH f, collect(CASE WHEN l.name = $up THEN c END)[0] AS u,
        collect(CASE WHEN l.name = $down THEN c END)[0] AS d
WITH f, u IS NULL OR d IS NULL AS one_sided,
     coalesce(u.pagerank_normalized, 0.0) AS up_score,
     coalesce(d.pagerank_normalized, 0.0) AS down_score,
     coalesce(u.support, 0) AS up_support, coalesce(d.support, 0) AS down_support,
     coalesce(u.activations, 0) AS up_activations, coalesce(d.activations, 0) AS down_activations
WHERE up_support >= $min_support OR down_support >= $min_support
WITH f, one_sided, up_score, down_score, up_support, down_support, up_activations,
     down_activations,
     log((up_score + $pseudo_count) / (down_score + $pseudo_count)) / log(2.0)
       AS log2_fold_change
ORDER BY log2_fold_change DESC, up_score DESC, f.index ASC
WITH collect({feature: f.id, index: f.index, log2_fold_change: log2_fold_change,
              up_score: up_score, down_score: down_score, up_support: up_support,
              down_support: down_support, up_activations: up_activations,
              down_activations: down_activations, one_sided: one_sided}) AS ranked
UNWIND range(1, size(ranked)) AS rank
WITH ranked[rank - 1] AS t, rank, size(ranked) AS candidates
WHERE rank <= $top
RETURN rank, t.feature AS feature, t.index AS index, t.log2_fold_change AS log2_fold_change,
       t.up_score AS up_score, t.down_score AS down_score,
       t.up_support AS up_support, t.down_support AS down_support,
       t.up_activations AS up_activations, t.down_activations AS down_activations,
       t.one_sided AS one_sided, candidates
ORDER BY rank
