"""A pack's README.md: where it came from, model-card style, readable on the HF hub as it is.

Pure text from what the pack folder holds: its manifest, ``transfer_report.json`` (``mkt
transfer``) and ``significance.json`` (``mkt eval --null-seeds`` writes one into its run folder;
copy it next to the manifest): Source, Target, protocol, alignment rank and
coverage, alpha and how it was chosen, the nulls it beat, or that it was not tested.
"""

from __future__ import annotations

import json
from pathlib import Path

from mkt.artifacts import replace_atomically

CARD = "README.md"
_NOT_TESTED = ("not tested: run `mkt eval --model TARGET --pack PACK --null-seeds 20` (random Source directions "
               "through the same map, each with its alpha chosen on dev) or `mkt sweep`")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def _model(m: dict) -> str:
    return f"{m['name']} ({m['n_layers']} layers x {m['d_model']}), {m.get('architecture', '?')}"


def _numbers(values, fmt: str = "{:.2f}") -> str:
    return " ".join(fmt.format(v) for v in values) if values else "n/a"


def _mean(values) -> str:
    return f"{sum(values) / len(values):.2f}" if values else "n/a"


def _protocol(prov: dict) -> str:
    variant = prov.get("variant", "not recorded")
    if variant == "prompt":
        return (f"prompt contrast on the Source: Unlocked `{prov.get('unlocked_template')!s}` minus Locked "
                f"`{prov.get('locked_template')!s}`, {prov.get('n')} questions, {prov.get('aggregator')} of the "
                f"differences, read at position `{prov.get('position', 'last')}`")
    if variant == "model":
        return (f"model contrast: post-trained minus base model on {prov.get('n')} questions, "
                f"{prov.get('aggregator')} of the differences, position `{prov.get('position', 'last')}`")
    if variant == "llama.cpp control vector":
        return (f"imported from the llama.cpp control vector `{prov.get('imported_from')}` (model hint "
                f"`{prov.get('model_hint')}`, sha256 `{prov.get('sha256', '')[:16]}...`)")
    return f"`{variant}`"


def _significance(sig: dict) -> list[str]:
    """Lines from a ``mkt.significance`` summary (``significance.json`` of ``mkt eval --null-seeds``)."""
    if not sig.get("rows"):
        return [f"- {_NOT_TESTED}"]
    rows, key = sig["rows"], sig["key"]
    lines = [f"Against {sig['n_null']} null draws (random Source directions through the same map, each with its "
             f"alpha chosen on dev) on {sig['n_test']} test items:", ""]
    for m in sig["metrics"]:
        row = rows[key]
        verdict = "beats" if sig["significant"][m] else "does not beat"
        lines.append(f"- {m}: baseline {rows['baseline'][m]:.3f}, key {row[m]:.3f} at alpha {row['alpha']}, "
                     f"effect {row[m + '_effect']:+.3f}, p = {row[m + '_p_vs_null']:.3f} against the null (95th "
                     f"percentile of its effects {sig['null'][m]['q95']:+.3f}): {verdict} it")
        for name, other in rows.items():
            if name not in (key, "baseline") and other["group"] != "null":  # the cue ceiling has no p-value
                p = f", p = {other[m + '_p_vs_null']:.3f}" if m + "_p_vs_null" in other else ""
                lines.append(f"  - {name} ({other['group']}): {other[m]:.3f}{p}")
    return lines


def pack_card(directory: str | Path) -> str:
    """The README.md text of the pack in ``directory`` (its manifest must be valid: load it first)."""
    directory = Path(directory)
    m = _json(directory / "manifest.json")
    prov = m.get("provenance", {})
    report = _json(directory / "transfer_report.json")
    significance = _json(directory / "significance.json")
    target, source = m["target"], m.get("source", m["target"])
    transferred = "source_model" in prov
    hub = target["name"] if "/" in target["name"] else None
    coverage = prov.get("coverage") or report.get("coverage") or []
    heldout = prov.get("alignment_heldout_relative_error") or report.get("heldout_error") or []
    layers = m.get("layers")
    lines = ["---", "library_name: mkt", "tags:", "- mkt", "- steering", "- capability-pack"]
    if hub:
        lines.append(f"base_model: {hub}")
    lines += ["---", "", f"# Capability pack for {target['name']}", ""]
    if m.get("description"):
        lines += [m["description"], ""]
    lines += [
        "A direction per layer of the Target's residual stream that steers it toward a capability "
        "(mkt, Master Key Transfer). Generated from the pack's manifest; do not edit by hand.", "",
        "| | |", "| --- | --- |",
        f"| Source | {_model(source)} |",
        f"| Target | {_model(target)} |",
        f"| Protocol | {_protocol(prov)} |",
    ]
    if transferred:
        lines += [
            f"| Alignment | {prov.get('alignment_method')}, rank k = {prov.get('k')}, fitted on "
            f"{prov.get('alignment_n')} prompt states, centred: {prov.get('alignment_center')} |",
            f"| Key coverage (share of the key in the Source's top-k subspace) | mean {_mean(coverage)}; per layer "
            f"{_numbers(coverage)} |",
            f"| Held-out relative error of the map | {_numbers(heldout)} |",
        ]
    else:
        lines.append("| Alignment | none: the key lives in the model it was made in |")
    lines += [
        f"| Hook | `blocks.{{l}}.{m['hook']}` |",
        f"| Intervention | mode `{m['mode']}`, scope `{m['scope']}`, layers {layers if layers is not None else 'all'} |",
        f"| Alpha | {m['alpha']} ({prov.get('alpha_choice', 'set by hand when the pack was written; not chosen on dev')}) |",
    ]
    if "oracle" in prov:
        lines.append(f"| ORACLE | {prov['oracle']} |")
    lines += ["", "## Nulls it was tested against", "", *_significance(significance), "",
              "## Use", "", "```bash", f"mkt generate --model MODEL --pack {directory.name} --prompt 'TEXT'"]
    if m["mode"] == "constant" and m["scope"] == "all":
        lines.append(f"mkt export {directory.name} --format gguf-control-vector --out {directory.name}.gguf"
                     "   # llama.cpp --control-vector")
    lines += ["```", "", f"Files: `manifest.json`, `directions.safetensors` (sha256 `{m['sha256'][:16]}...`)"
              + (", `source-key/` and `alignment.safetensors` (what the null is drawn from)"
                 if (directory / "alignment.safetensors").exists() else ""), ""]
    return "\n".join(lines)


def write_pack_card(directory: str | Path) -> Path:
    """Write ``directory/README.md`` from the pack there; returns its path."""
    path = Path(directory) / CARD
    replace_atomically(path, pack_card(directory))
    return path
