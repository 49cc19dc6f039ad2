"""Steering SAE features and reading the effect through a classifier head.

- `features`: classifier inputs (content-token hidden states or SAE latents per sequence);
- `classifier`: the length-blind CNN head, its seeded id-hash split and early stopping;
- `interventions`: the S4 operator on latents and its exact decoding into hidden states;
- `run`: the δ × α grid over the targets of `targets.json`, batched over sequences and
  conditions, on the classifier's held-out test split;
- `report`: report.md, metrics.json, arrays and PNG plots;
- `depmap`: batched in-silico mutagenesis maps of one feature over one sequence;
- `metrics`: accuracy, F1, ROC/AUROC in numpy;
- `cli`: `hsg classifier train|eval`, `hsg steer`, `hsg depmap`.
"""
