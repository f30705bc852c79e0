"""The ablation's result as a figure and as text, every key number beside its control."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analyses._common import (
    pyplot,
    save_figure,
)
from analyses.ablation.parts import WINDOW_LABELS, AblationResult, pooled_nulls, pooled_p

FAMILY_COLORS = {"random": "C3", "Locked PCs": "C1", "unembedding": "C4"}


def plot_ablation(result: AblationResult, path: str | Path) -> None:
    plt = pyplot()
    s = result.sufficiency
    x = result.relative_depth
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(s.alphas)))

    ax = axes[0, 0]
    for j, alpha in enumerate(s.alphas):
        ax.plot(x, s.key[0, :, j], "o-", color=colors[j], label=f"key, alpha {alpha:g}")
        ax.plot(x, s.random_mean[0, :, j], ":", color=colors[j], alpha=0.8)
    if result.patching is not None:
        p = result.patching
        ax.plot(x, p.patched, "k^-", label="patch Unlocked -> Locked" + (" (last layer: identity)"
                                                                         if p.identity_at_last else ""))
        ax.plot(x, p.control.mean(-1), "kv:", label=f"control: Locked + random vector of norm ||h_U - h_L|| "
                                                    f"(mean of {p.control.shape[1]})")
        if not np.isnan(p.along_key).all():
            ax.plot(x, p.along_key, "^-", color="C6", label="patch, its component along the key only")
            ax.plot(x, p.without_key, "x:", color="C6", label="patch without its component along the key")
        ax.plot(x, p.along_random.mean(-1), "^:", color="gray", ms=4,
                label=f"patch, component along a random direction only (mean of {p.along_random.shape[1]})")
    ax.set_title(f"one layer at a time (dotted: random directions, same alpha, mean of {len(result.null_seeds)})",
                 fontsize=10)

    ax = axes[0, 1]
    j = int(np.argmin(np.abs(np.array(s.alphas) - result.alpha)))
    for w, marker in zip((1, 2), ("s", "D")):
        ax.plot(x, s.key[w, :, j], marker + "-", label=f"key, {WINDOW_LABELS[s.windows[w]]}")
        ax.plot(x, s.random_mean[w, :, j], marker + ":", alpha=0.7, label=f"random, {WINDOW_LABELS[s.windows[w]]}")
    ax.set_title(f"cumulative windows at alpha {s.alphas[j]:g}", fontsize=10)

    ax = axes[1, 0]
    ax.plot(x, s.matched_key, "o-", color="C0", lw=2, label="key, layer l only")
    for i in np.flatnonzero(~s.key_matched):
        ax.annotate(f"unmatched (KL {s.matched_kl[i]:.2g})", (x[i], s.matched_key[i]), xytext=(3, 6),
                    textcoords="offset points", fontsize=7, color="C0")
    width = 0.012
    for f, null in enumerate(s.nulls):
        color = FAMILY_COLORS.get(null.family, f"C{5 + f}")
        offset = (f - (len(s.nulls) - 1) / 2) * width
        for l in range(len(x)):
            v = null.value[l][null.matched[l]]
            ax.plot(np.full(v.size, x[l] + offset), v, "o", ms=3.5, color=color, alpha=0.7,
                    label=None if l else f"{null.family}: KL-matched (each a point)")
        n_un = (~null.matched).sum(-1)
        ax.plot([], [], " ", label=f"{null.family}: unmatched per layer " + " ".join(str(k) for k in n_un)
                + f" of {null.matched.shape[1]}")
    pooled = pooled_p(s)
    for l in range(len(x) if s.nulls else 0):
        n_matched = pooled_nulls(s, l).size
        ax.annotate(f"p={pooled[l]:.2g}\n(of {n_matched})", (x[l], s.matched_key[l]), xytext=(4, -20),
                    textcoords="offset points", fontsize=7, color="C0")
    ax.set_title(f"one layer, alpha matched on KL at the decision token ({s.kl_target:.3g} nats = key at all layers, "
                 f"+/-{s.kl_tolerance:.0%});\nunmatched nulls (alpha <= {s.alpha_cap:g}) counted, not plotted; "
                 "p: key vs matched random + PC nulls", fontsize=9)

    for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
        ax.axhline(result.all_layers, color="green", ls="--", lw=1, label=f"key at all layers, alpha {result.alpha:g}")
        ax.axhline(result.no_key, color="gray", ls="--", lw=1, label="no key")
        ax.set_xlabel("relative depth of layer l")
        ax.set_ylabel(result.metric if len(result.metric) < 40 else "metric")
    axes[0, 1].legend(fontsize=6.5)
    lo, hi = axes[0, 0].get_ylim()
    axes[0, 0].set_ylim(lo, hi + 0.8 * (hi - lo))  # room for the legend above the curves
    axes[0, 0].legend(fontsize=6.5, loc="upper center", ncol=2)
    lo, hi = axes[1, 0].get_ylim()
    axes[1, 0].set_ylim(lo - 0.75 * (hi - lo), hi)  # room for the legend below the points
    axes[1, 0].legend(fontsize=6.5, loc="lower center", ncol=2)

    ax = axes[1, 1]
    nec = result.necessity
    labels = [f"{run}\n{scope}" for run in nec.runs for scope in nec.scopes]
    pos = np.arange(len(labels))
    bars = [("key projected out", nec.survival.ravel(), "C0", None)]
    for name, ns in zip(nec.null_families, nec.null_survival):
        if name == "random":
            flat = ns.reshape(len(labels), -1)
            bars.append((f"random projected out (mean, min-max of {flat.shape[1]})", flat.mean(-1), "C3",
                         np.stack([flat.mean(-1) - flat.min(-1), flat.max(-1) - flat.mean(-1)])))
        else:
            for k, lab in enumerate(nec.null_labels[nec.null_families.index(name)]):
                bars.append((f"Locked {lab} projected out", ns[..., k].ravel(), plt.cm.Oranges(0.8 - 0.2 * k), None))
    w = 0.8 / len(bars)
    for b, (lab, values, color, err) in enumerate(bars):
        ax.bar(pos - 0.4 + w * (b + 0.5), values, w, color=color, yerr=err, capsize=2, label=lab)
    mean_pos = [i for i, lab in enumerate(labels) if lab.endswith("last")]
    ax.plot(np.array(mean_pos) - 0.4 + w * 0.5, nec.mean_survival, "k*", ms=9, label="key mean-ablated (last token)")
    ax.axhline(1, color="gray", lw=0.8)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks(pos, labels, fontsize=8)
    ax.set_ylabel("share of the capability that survives")
    ax.set_title("necessity: the direction projected out at every layer (last token / all positions);\n"
                 f"the Locked run itself moves {nec.locked:+.2f} -> " + "/".join(f"{v:+.2f}" for v in nec.locked_ablated)
                 + " when the key is projected out", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path, f"Ablation of the key ({result.hook}): {result.model}, {result.n_prompts} prompts; metric: "
                f"{result.metric}")


def report(result: AblationResult) -> str:
    """The result as text: every key number beside its control."""
    s, lines = result.sufficiency, [f"{result.metric} at {result.hook}: no key {result.no_key:.3f}, key at all layers "
                                    f"(alpha {result.alpha:g}) {result.all_layers:.3f}"]
    lines.append(f"sufficiency grid (key / random mean / random max), {len(result.null_seeds)} random directions:")
    for w, window in enumerate(s.windows):
        for layer in range(len(result.relative_depth)):
            cells = "  ".join(f"a{a:g} {s.key[w, layer, j]:+.2f}/{s.random_mean[w, layer, j]:+.2f}/"
                              f"{s.random_max[w, layer, j]:+.2f}" for j, a in enumerate(s.alphas))
            lines.append(f"  {WINDOW_LABELS[window]:12s} l={layer}: {cells}")
    lines.append(f"one layer, KL-matched to {s.kl_target:.3g} nats (+/-{s.kl_tolerance:.0%}); per null family: matched "
                 "count, their mean / max metric, p = (1 + #matched >= key) / (1 + #matched); unmatched: max KL reached")
    for layer in range(len(result.relative_depth)):
        cells = []
        for null in s.nulls:
            ok = null.matched[layer]
            v = null.value[layer][ok]
            un = (f"; {(~ok).sum()} unmatched (KL <= {null.kl[layer][~ok].max():.3g})" if (~ok).any() else "")
            cells.append(f"{null.family} {ok.sum()}/{ok.size}" + (f" {v.mean():+.2f}/{v.max():+.2f} p={null.p[layer]:.2g}"
                                                                  if ok.any() else "") + un)
        flag = "" if s.key_matched[layer] else " UNMATCHED"
        lines.append(f"  l={layer}: key alpha {s.matched_alpha[layer]:.3g} (KL {s.matched_kl[layer]:.3g}{flag}) "
                     f"{s.matched_key[layer]:+.2f}, p(random+PCs)={pooled_p(s)[layer]:.2g} | " + " | ".join(cells))
    n = result.necessity
    lines.append(f"necessity (Locked {n.locked:+.3f}; the Locked run with the key projected out "
                 + "/".join(f"{v:+.3f}" for v in n.locked_ablated) + f", mean-ablated {n.locked_mean_ablated:+.3f})")
    lines.append("  variance share of the Locked states along the key per layer " + " ".join(
        f"{v:.3f}" for v in n.variance_share_key) + "; " + "; ".join(
        f"{name} (mean of {len(vs)}) " + " ".join(f"{v:.3f}" for v in vs.mean(0)) if name == "random" else
        "; ".join(f"{lab} " + " ".join(f"{v:.3f}" for v in row) for lab, row in zip(labels, vs))
        for name, labels, vs in zip(n.null_families, n.null_labels, n.variance_share_nulls)))
    for r, name in enumerate(n.runs):
        lines.append(f"  {name} {n.unlocked[r]:+.3f}: mean-ablated {n.mean_ablated[r]:+.3f} "
                     f"(survival {n.mean_survival[r]:.2f})")
        for sc, scope in enumerate(n.scopes):
            nulls = "  ".join(
                f"{fam}: " + ("/".join(f"{v:.2f}" for v in ns[r, sc]) if ns.shape[-1] <= 4 else
                              f"mean {ns[r, sc].mean():.2f} min {ns[r, sc].min():.2f}") + f" p={n.p[f, r, sc]:.2g}"
                for f, (fam, ns) in enumerate(zip(n.null_families, n.null_survival)))
            lines.append(f"    {scope}: key {n.ablated[r, sc]:+.3f} survival {n.survival[r, sc]:.2f} "
                         f"(net of the ablated Locked run {n.survival_net[r, sc]:.2f}) | {nulls}")
    if result.patching is not None:
        p = result.patching
        lines.append(f"patching Unlocked -> Locked per layer at {p.hook} (Locked {p.locked:+.3f}, Unlocked "
                     f"{p.unlocked:+.3f}{'; last layer = identity' if p.identity_at_last else ''}): " + "  ".join(
                         f"l{i} {v:+.2f} (ctrl mean {c.mean():+.2f} max {c.max():+.2f}, p={pv:.2g})"
                         for i, (v, c, pv) in enumerate(zip(p.patched, p.control, p.p))))
        lines.append("  the patch split along one direction u: along the key only / without the key's component / "
                     "along random (mean, max; p of the key) / along Locked PCs / along these prompts' mean "
                     "difference (reference): " + "  ".join(
                         f"l{i} {a:+.2f}/{w:+.2f}/{r.mean():+.2f},{r.max():+.2f} p={pa:.2g}/"
                         + ",".join(f"{v:+.2f}" for v in pc) + f"/{m:+.2f}"
                         for i, (a, w, r, pa, pc, m) in enumerate(zip(p.along_key, p.without_key, p.along_random,
                                                                      p.p_along, p.along_pcs,
                                                                      p.along_mean_difference))))
    lines += result.notes
    return "\n".join(lines)
