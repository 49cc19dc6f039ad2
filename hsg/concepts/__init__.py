"""What a feature *is*: concept F1 against annotations and motif matches against JASPAR.

`data` builds the token × feature activation matrix and the token × concept label matrix,
`f1` scores every (feature, concept) pair over a threshold grid with sparse products,
`motifs` turns a feature's strongest activations into a PWM and compares it with JASPAR.
"""
