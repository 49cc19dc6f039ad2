// description: The features whose activation motif resembles one JASPAR motif (its name, e.g. CTCF, its matrix id, e.g. MA0139.2, or its annotation id jaspar:MA0139.2), most significant Tomtom match first, from `hsg motifs`; with the feature's own consensus.
// params: motif, limit
MATCH (f:Feature)-[r:RESEMBLES]->(a:Annotation)
WHERE a.name = $motif OR a.id = $motif OR a.id = 'jaspar:' + $motif
RETURN f.id AS feature, f.index AS index, f.motif_consensus AS consensus, a.id AS motif,
       a.name AS name, r.pvalue AS pvalue, r.qvalue AS qvalue, r.orientation AS orientation,
       r.offset AS offset
ORDER BY pvalue ASC, feature ASC
LIMIT $limit
