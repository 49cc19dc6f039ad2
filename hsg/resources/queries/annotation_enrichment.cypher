// description: Features enriched on sequences carrying an annotation (e.g. G-quadruplex `g4`): among the sequences encoded by the SAE, the fraction of annotated and of unannotated sequences activating each feature, with the counts; sorted by the difference of the two fractions.
// params: sae, annotation, min_sequences, limit
MATCH (x:SAE {id: $sae})
CALL (x) {
  MATCH (x)<-[:ENCODED_BY]-(s:Sequence)
  RETURN count(s) AS total,
         count(CASE WHEN EXISTS { (s)-[:OVERLAPS|HAS_MOTIF]->(:Annotation {id: $annotation}) }
                    THEN 1 END) AS annotated_total
}
MATCH (x)<-[:ENCODED_BY]-(s:Sequence)
WITH total, annotated_total, s,
     EXISTS { (s)-[:OVERLAPS|HAS_MOTIF]->(:Annotation {id: $annotation}) } AS annotated
MATCH (s)-[:ACTIVATES]->(f:Feature {sae: $sae})
WITH DISTINCT total, annotated_total, s, annotated, f
WITH f, annotated_total, total - annotated_total AS unannotated_total,
     count(CASE WHEN annotated THEN 1 END) AS annotated_with,
     count(CASE WHEN NOT annotated THEN 1 END) AS unannotated_with
WHERE annotated_with + unannotated_with >= $min_sequences
WITH f, annotated_with, annotated_total, unannotated_with, unannotated_total,
     CASE WHEN annotated_total > 0 THEN toFloat(annotated_with) / annotated_total END
       AS annotated_fraction,
     CASE WHEN unannotated_total > 0 THEN toFloat(unannotated_with) / unannotated_total END
       AS unannotated_fraction
RETURN f.id AS feature, f.index AS index,
       annotated_with, annotated_total, annotated_fraction,
       unannotated_with, unannotated_total, unannotated_fraction,
       annotated_fraction - unannotated_fraction AS difference
ORDER BY difference DESC, index ASC
LIMIT $limit
