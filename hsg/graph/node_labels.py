"""The extra node labels that let GDS project a phenotype's graph natively.

PageRank runs on one label's sequences and one SAE's features. GDS's native projection,
which reads the store directly and is several times faster than any Cypher projection, can
only select nodes by node label, so the writer gives each node one more label besides its
own:

* a Sequence carrying `(:Label {name: n})` also carries the node label `Label_<n>`;
* a Feature of the SAE with id `x` also carries `SAE_<x>`.

Names are used verbatim after the prefix (Neo4j accepts any string as a label; Cypher
refers to it through a parameter, `:$($name)`, never by splicing). The HAS_LABEL
relationship and the `sae` property stay the graph's record; these labels mirror them,
written in the same statement (`statements.MERGE_SEQUENCES`, `MERGE_FEATURES`, the bulk
files), restored by `hsg db init` on older graphs and compared by `hsg db check`.
"""

from __future__ import annotations

LABEL_PREFIX = "Label_"
SAE_PREFIX = "SAE_"


def phenotype_node_label(name: str) -> str:
    """The node label of the sequences that carry the label `name`."""
    return LABEL_PREFIX + name


def sae_node_label(sae_id: str) -> str:
    """The node label of the features of SAE `sae_id`."""
    return SAE_PREFIX + sae_id
