// description: The neighbourhood of one feature (the study's Figure 3): the sequences activating it most often, and for each of them its other features of the same SAE, most activations first. Returns nodes, so Browser draws the subgraph.
// params: feature, sequences, neighbours
MATCH (f:Feature {id: $feature})<-[a:ACTIVATES]-(s:Sequence)
WITH f, s, count(a) AS activations
ORDER BY activations DESC, s.id ASC
LIMIT $sequences
CALL (f, s) {
  MATCH (s)-[b:ACTIVATES]->(o:Feature)
  WHERE o.sae = f.sae AND o <> f
  WITH o, count(b) AS n
  ORDER BY n DESC, o.index ASC
  LIMIT $neighbours
  RETURN collect(o) AS neighbours, collect(n) AS neighbour_activations
}
RETURN f AS feature, s AS sequence, activations, neighbours, neighbour_activations
ORDER BY activations DESC, sequence.id ASC
