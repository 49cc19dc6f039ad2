"""The feature atlas: one static folder, opened as ``index.html`` without any server.

``index.html`` lists every feature that has a result in the graph (CENTRALITY, DETECTS,
RESEMBLES or a motif) in one table, sortable by any column (click its header) and filtered
by a search box; ``features/<index>.html`` is one card per feature: its logo, its strongest
activating sequences with the activating token highlighted, its concept F1 table, its
PageRank per label, its JASPAR matches, its steering results when `hsg steer` results are
given (`hsg.atlas.steering`; the index then also sorts by the largest shift of the
classifier) and the Cypher that opens it in Neo4j Browser.
Everything is inline or a relative file (logos are PNGs in ``logos/``), so the folder can be
zipped, mailed or served from anywhere. Text from the graph is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hsg.atlas.steering import SteeringRun, check_sae, largest_shift, shift, shown
from hsg.concepts.motifs import FeatureMotif, save_logo
from hsg.graph.concept_writes import atlas_features, top_activations

Log = Callable[[str], None]
PSEUDO = 1e-6

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}
th{cursor:pointer;background:#f3f3f3;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
input#search{font-size:15px;padding:4px 8px;width:24em;margin:0.5em 0 1em}
.seq{font-family:monospace;font-size:12px;word-break:break-all}
mark{background:#ffd54f}
pre{background:#f6f6f6;padding:8px;overflow-x:auto}
.muted{color:#888}
dl.run{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}
dl.run dt{color:#666}dl.run dd{margin:0}
"""

_SCRIPT = """
(function () {
  var search = document.getElementById('search');
  var rows = Array.prototype.slice.call(document.querySelectorAll('#features tbody tr'));
  var count = document.getElementById('count');
  function filter() {
    var q = search.value.trim().toLowerCase();
    var shown = 0;
    rows.forEach(function (r) {
      var hit = !q || r.getAttribute('data-search').indexOf(q) >= 0;
      r.style.display = hit ? '' : 'none';
      if (hit) { shown += 1; }
    });
    count.textContent = shown + ' of ' + rows.length + ' features';
  }
  search.addEventListener('input', filter);
  document.querySelectorAll('#features th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var desc = th.getAttribute('data-desc') !== 'true';
      th.setAttribute('data-desc', desc ? 'true' : 'false');
      var body = document.querySelector('#features tbody');
      rows.sort(function (a, b) {
        var x = a.children[col].getAttribute('data-v'), y = b.children[col].getAttribute('data-v');
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (isNaN(nx) || isNaN(ny)) ? String(x).localeCompare(String(y)) : nx - ny;
        return desc ? -c : c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  filter();
})();
"""


@dataclass
class AtlasSummary:
    out: str
    features: int
    logos: int
    files: list[str] = field(default_factory=list)

    @property
    def index(self) -> str:
        return str(Path(self.out) / "index.html")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 3) -> tuple[str, str]:
    """(display text, sort key) of a number; missing values sort last."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", "-1e300"
    return f"{value:.{digits}g}", repr(float(value))


def _clean(items: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [i for i in items if i.get(key) is not None]


def _page(title: str, body: str, script: str = "") -> str:
    tail = f"<script>{script}</script>" if script else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}{tail}</body></html>"
    )


def _highlight(sequence: str, start: int, end: int) -> str:
    return f"{_e(sequence[:start])}<mark>{_e(sequence[start:end])}</mark>{_e(sequence[end:])}"


def _token_span(sequence: str, position: int) -> tuple[int, int]:
    from hsg.models.tokenizer import NucleotideTokenizer

    _, offsets = NucleotideTokenizer("v2").tokenize(sequence)
    if 0 <= position < len(offsets):
        return offsets[position]
    return (0, 0)


def build_atlas(
    driver,
    database: str,
    sae: str,
    out: Path,
    top_sequences: int = 5,
    log: Log | None = None,
    steering: list[SteeringRun] | None = None,
) -> AtlasSummary:
    """Write the atlas of `sae` into `out` (created; existing atlas files are overwritten)."""
    steering = steering or []
    check_sae(steering, sae)
    features = _with_steered(atlas_features(driver, database, sae), steering)
    tops: dict[str, list[dict[str, Any]]] = {}
    ids = [f["feature"] for f in features]
    for i in range(0, len(ids), 500):
        for r in top_activations(driver, database, ids[i : i + 500], top_sequences):
            tops.setdefault(r["feature"], []).append(r)
    if log:
        log(f"{len(features)} features with results")
    return render_atlas(sae, features, tops, out, steering=steering)


def _with_steered(
    features: list[dict[str, Any]], steering: list[SteeringRun]
) -> list[dict[str, Any]]:
    """The graph's rows plus an empty row for each steering target the graph has no result
    for, so that every steered feature gets a card."""
    have = {f["feature"] for f in features}
    extra: dict[str, dict[str, Any]] = {}
    for run in steering:
        for feature, rows in run.conditions.items():
            if feature in have or feature in extra:
                continue
            extra[feature] = {
                "feature": feature,
                "index": int(rows[0]["index"]),
                "consensus": None,
                "pwm": None,
                "central": [],
                "detects": [],
                "resembles": [],
            }
    return features + sorted(extra.values(), key=lambda f: f["index"])


def render_atlas(
    sae: str,
    features: list[dict[str, Any]],
    tops: dict[str, list[dict[str, Any]]],
    out: Path,
    steering: list[SteeringRun] | None = None,
) -> AtlasSummary:
    """Write the atlas from rows shaped like `atlas_features` / `top_activations` return,
    with the steering results of `steering` (checked to be of `sae` before anything is
    written)."""
    steering = steering or []
    check_sae(steering, sae)
    features = _with_steered(features, steering)
    out.mkdir(parents=True, exist_ok=True)
    (out / "features").mkdir(exist_ok=True)
    labels = sorted({c["label"] for f in features for c in _clean(f["central"], "label")})
    fc_pair = labels[:2] if len(labels) >= 2 else None
    summary = AtlasSummary(str(out), len(features), 0)
    rows = []
    for f in features:
        central = {c["label"]: c for c in _clean(f["central"], "label")}
        detects = _clean(f["detects"], "annotation")
        resembles = _clean(f["resembles"], "motif")
        logo = None
        if f.get("pwm"):
            motif = FeatureMotif(f["feature"], [], np.asarray(json.loads(f["pwm"])))
            path = save_logo(motif, out / "logos" / f"{f['index']}.png", f"feature {f['index']}")
            if path is not None:
                logo = f"logos/{f['index']}.png"
                summary.logos += 1
        fc = None
        if fc_pair:
            a = (central.get(fc_pair[0]) or {}).get("pagerank") or 0.0
            b = (central.get(fc_pair[1]) or {}).get("pagerank") or 0.0
            if a or b:
                fc = math.log2((a + PSEUDO) / (b + PSEUDO))
        card = _card(
            f, central, detects, resembles, tops.get(f["feature"], []), logo, labels, steering
        )
        card_path = out / "features" / f"{f['index']}.html"
        card_path.write_text(card, encoding="utf-8")
        summary.files.append(str(card_path))
        rows.append((f, central, detects, resembles, fc))
    index = _index(sae, rows, labels, fc_pair, steering)
    (out / "index.html").write_text(index, encoding="utf-8")
    summary.files.insert(0, str(out / "index.html"))
    return summary


def _index(sae: str, rows, labels: list[str], fc_pair, steering: list[SteeringRun]) -> str:
    head = ["feature"] + [f"PageRank {lab}" for lab in labels]
    if fc_pair:
        head.append(f"log2 FC {fc_pair[0]}/{fc_pair[1]}")
    head += ["best concept", "F1", "best motif", "p-value"]
    if steering:
        head.append("steering: largest |Δ mean P|")
    body = []
    for f, central, detects, resembles, fc in rows:
        best_c = detects[0] if detects else {}
        best_m = resembles[0] if resembles else {}
        search = " ".join(
            [str(f["feature"]), str(f["index"]), f.get("consensus") or ""]
            + [d.get("concept") or "" for d in detects]
            + [f"{m.get('name') or ''} {m.get('motif') or ''}" for m in resembles]
            + (["steered"] if any(f["feature"] in r.conditions for r in steering) else [])
        ).lower()
        cells = [
            f"<td data-v='{f['index']}'><a href='features/{f['index']}.html'>"
            f"{_e(f['feature'])}</a></td>"
        ]
        for lab in labels:
            text, key = _num((central.get(lab) or {}).get("pagerank"))
            cells.append(f"<td class='num' data-v='{key}'>{text}</td>")
        if fc_pair:
            text, key = _num(fc)
            cells.append(f"<td class='num' data-v='{key}'>{text}</td>")
        text, key = _num(best_c.get("f1"))
        cells.append(f"<td data-v='{_e(best_c.get('concept'))}'>{_e(best_c.get('concept'))}</td>")
        cells.append(f"<td class='num' data-v='{key}'>{text}</td>")
        motif = f"{best_m.get('name') or ''} {best_m.get('motif') or ''}".strip()
        text, key = _num(best_m.get("pvalue"))
        cells.append(f"<td data-v='{_e(motif)}'>{_e(motif)}</td>")
        cells.append(f"<td class='num' data-v='{key}'>{text}</td>")
        if steering:
            # shown signed, sorted by magnitude: a shift down matters as much as one up
            value = largest_shift(steering, f["feature"])
            key = "-1e300" if value is None else repr(abs(value))
            text = "" if value is None else f"{value:+.3f}"
            cells.append(f"<td class='num steer' data-v='{key}'>{text}</td>")
        body.append(f"<tr data-search='{_e(search)}'>{''.join(cells)}</tr>")
    table = (
        "<table id='features'><thead><tr>"
        + "".join(f"<th>{_e(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )
    content = (
        f"<h1>Feature atlas</h1><p>SAE <code>{_e(sae)}</code>. Click a column header to sort; "
        "type to filter by feature, concept or motif.</p>"
        "<input id='search' type='search' placeholder='filter: feature, concept, motif…'>"
        f"<p id='count' class='muted'></p>{table}"
    )
    return _page(f"hsg atlas — {sae}", content, _SCRIPT)


def _steering_section(feature: str, steering: list[SteeringRun]) -> str:
    """One table per run that steered `feature`, under the run's model/SAE/classifier."""
    parts = []
    for run in steering:
        rows = run.conditions.get(feature)
        if not rows:
            continue
        p = run.provenance
        base = run.baseline
        ckpt = str(p.get("model_checkpoint_hash"))[:12]
        meta = [
            ("results", run.name),
            ("model", f"{shown(p.get('model_id'))} (checkpoint {ckpt})"),
            ("SAE", p.get("sae_id")),
            ("classifier", f"{shown(p.get('classifier'))} ({p.get('classifier_input')}, weights "
             f"{str(p.get('classifier_weights_sha256'))[:12]})"),
            ("positive label", p.get("positive_label")),
            ("route", run.route),
            ("held-out sequences", run.n_sequences),
            ("baseline", f"mean P {_num(base.get('mean_prob'))[0]}, AUROC "
             f"{_num(base.get('auroc'))[0]}"),
        ]  # fmt: skip
        items = []
        for r in rows:
            cells = [f"<td>{_e(r.get('label'))}</td>", f"<td>{_e(r.get('kind'))}</td>"]
            for key in ("min_act", "alpha"):
                text, v = _num(r.get(key))
                cells.append(f"<td class='num' data-v='{v}'>{text}</td>")
            s = shift(r)
            cells.append(
                f"<td class='num' data-v='{'' if s is None else repr(s)}'>"
                f"{'' if s is None else f'{s:+.4f}'}</td>"
            )
            for key in ("mean_prob", "auroc", "delta_auroc", "flipped", "mean_abs_delta_prob"):
                text, v = _num(r.get(key), 4)
                cells.append(f"<td class='num' data-v='{v}'>{text}</td>")
            items.append(f"<tr class='condition'>{''.join(cells)}</tr>")
        parts.append(
            "<dl class='run'>"
            + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta)
            + "</dl><table class='steering'><tr><th>condition</th><th>intervention</th>"
            "<th>δ (floor)</th><th>α (gain)</th><th>Δ mean P(positive)</th>"
            "<th>mean P(positive)</th><th>AUROC</th><th>Δ AUROC</th><th>flipped</th>"
            f"<th>mean |ΔP|</th></tr>{''.join(items)}</table>"
        )
    if not parts:
        return ""
    return "<h2>Steering</h2>" + "".join(parts)


def _card(f, central, detects, resembles, tops, logo, labels, steering=()) -> str:
    parts = [f"<p><a href='../index.html'>← atlas</a></p><h1>{_e(f['feature'])}</h1>"]
    if logo:
        parts.append(f"<img src='../{_e(logo)}' alt='logo of feature {_e(f['index'])}'>")
        parts.append(f"<p>consensus <code>{_e(f.get('consensus'))}</code></p>")
    if tops:
        items = []
        for t in tops:
            s, e = _token_span(t["sequence"] or "", int(t["position"]))
            items.append(
                f"<tr><td>{_e(t['id'])}</td><td class='num'>{t['activation']:.3g}</td>"
                f"<td class='seq'>{_highlight(t['sequence'] or '', s, e)}</td></tr>"
            )
        parts.append(
            "<h2>Strongest activations</h2><table><tr><th>sequence</th><th>activation</th>"
            f"<th>bases (token highlighted)</th></tr>{''.join(items)}</table>"
        )
    if detects:
        items = "".join(
            f"<tr><td>{_e(d['concept'])}</td><td class='num'>{d['f1']:.3f}</td>"
            f"<td class='num'>{d['precision']:.3f}</td><td class='num'>{d['recall']:.3f}</td>"
            f"<td class='num'>{d['threshold']:.3g}</td><td class='num'>{d['support']}</td></tr>"
            for d in detects
        )
        parts.append(
            "<h2>Concepts (test split)</h2><table><tr><th>concept</th><th>F1</th>"
            "<th>precision</th><th>recall</th><th>threshold</th><th>support</th></tr>"
            f"{items}</table>"
        )
    if central:
        items = "".join(
            f"<tr><td>{_e(lab)}</td><td class='num'>{_num(central[lab].get('pagerank'))[0]}</td>"
            f"<td class='num'>{_e(central[lab].get('support'))}</td></tr>"
            for lab in labels
            if lab in central
        )
        parts.append(
            "<h2>Centrality</h2><table><tr><th>label</th><th>PageRank (normalised)</th>"
            f"<th>support</th></tr>{items}</table>"
        )
    if resembles:
        items = "".join(
            f"<tr><td>{_e(m['name'])}</td><td>{_e(m['motif'])}</td>"
            f"<td class='num'>{m['pvalue']:.2g}</td><td class='num'>{m['qvalue']:.2g}</td>"
            f"<td>{_e(m['orientation'])}</td></tr>"
            for m in resembles
        )
        parts.append(
            "<h2>JASPAR matches (Tomtom)</h2><table><tr><th>name</th><th>matrix</th>"
            f"<th>p</th><th>q</th><th>strand</th></tr>{items}</table>"
        )
    parts.append(_steering_section(f["feature"], list(steering)))
    cypher = (
        f":param feature => {json.dumps(f['feature'])}\n"
        "MATCH (f:Feature {id: $feature})-[r:DETECTS|RESEMBLES|CENTRALITY]->(n)\n"
        "RETURN f, r, n"
    )
    parts.append(
        "<h2>Open in Neo4j Browser</h2><p>Paste into the Browser's editor:</p>"
        f"<pre>{_e(cypher)}</pre>"
    )
    return _page(f"feature {f['feature']}", "".join(parts))
