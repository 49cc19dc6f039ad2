// description: The most central features of one label for one SAE: PageRank from `hsg analyze pagerank` (normalised to sum 1 over the label's features), with how many of the label's sequences activate each feature.
// params: sae, label, limit
MATCH (l:Label {name: $label})<-[c:CENTRALITY]-(f:Feature)
WHERE c.sae = $sae
RETURN f.id AS feature, f.index AS index, c.pagerank_normalized AS pagerank_normalized,
       c.pagerank AS pagerank, c.support AS support, c.activations AS activations
ORDER BY pagerank_normalized DESC, index ASC
LIMIT $limit
