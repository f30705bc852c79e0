"""The ablation's three parts (sufficiency, necessity, activation patching), each beside its nulls."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from analyses._common import (
    relative_depth,
)
from analyses.ablation.metric import Metric, bisect_increasing, survival, variance_share
from mkt.activations import prompt_states
from mkt.conditions import (
    Condition,
    combine,
    mean_ablation_condition,
    no_condition,
    patch_condition,
    project_out,
    projection_condition,
    steering_condition,
)
from mkt.controls import size_matched_noise, top_principal_directions
from mkt.eval.stats import empirical_p_value
from mkt.key import random_like
from mkt.models import PER_HEAD_HOOKS, RESID_HOOK
from mkt.steering import Steering

WINDOWS = ("only", "upto", "from")  # layer l alone, layers <= l, layers >= l
WINDOW_LABELS = {"only": "layer l only", "upto": "layers <= l", "from": "layers >= l"}
ABLATION_SCOPES = ("last", "all")  # projection at the last prompt token (the key's site) / at every position


# ---- the null directions ---------------------------------------------------------------------------------


def locked_states(model, prompts: list[str], key) -> Float[Tensor, "n layer d"]:
    """The Locked run's last-token states at the key's own hook point."""
    return prompt_states(model, prompts, hook=key.hook)


def scaled_like(key, units: Float[Tensor, "m layer d"]) -> Float[Tensor, "m layer d"]:
    """Directions with the key's per-layer norms (only the direction matters to the rotation and projection)."""
    return units / units.norm(dim=-1, keepdim=True).clamp_min(1e-30) * key.norms()[None, :, None]


def null_direction_sets(model, key, states: Float[Tensor, "n layer d"], seeds: list[int], n_pcs: int,
                        n_unembed: int, exclude_tokens: list[int]) -> dict[str, tuple[list[str], Tensor]]:
    """Families of non-key directions (each ``[m, layer, d]``, the key's norms) with a label per member.

    - ``random``: isotropic Gaussian (``random_like``), one per seed;
    - ``Locked PCs``: +/- the top principal directions of the Target's Locked-only states
      (pooling Unlocked states would put the cue's difference into the variance);
    - ``unembedding``: the unembedding columns ``W_U[:, t]`` of other tokens, the same at every
      layer (a push straight at another output token); not at a per-head hook, whose states
      are not in the residual stream's basis.
    """
    out: dict[str, tuple[list[str], Tensor]] = {}
    if seeds:
        out["random"] = ([f"seed {s}" for s in seeds], torch.stack([random_like(key, s).directions for s in seeds]))
    if n_pcs:
        pcs = top_principal_directions(states, n_pcs)
        out["Locked PCs"] = ([f"{s}PC{k + 1}" for k in range(n_pcs) for s in "+-"],
                             scaled_like(key, torch.stack([s * pcs[k] for k in range(n_pcs) for s in (1, -1)])))
    if n_unembed and key.hook not in PER_HEAD_HOOKS:
        skip = set(exclude_tokens) | set(model.tokenizer.all_special_ids)  # no <pad>, <bos>, <eos> pushes
        others = [t for t in range(model.cfg.d_vocab) if t not in skip]
        pick = torch.randperm(len(others), generator=torch.Generator().manual_seed(0))[:n_unembed]
        tokens = [others[i] for i in pick.tolist()]
        w_u = model.W_U.detach().float().cpu()
        cols = torch.stack([w_u[:, t][None].expand(key.n_layers, -1) for t in tokens])
        out["unembedding"] = ([repr(model.tokenizer.convert_ids_to_tokens(t)) for t in tokens], scaled_like(key, cols))
    return out


# ---- the three parts -------------------------------------------------------------------------------------


def window_layers(window: str, layer: int, n_layers: int) -> list[int]:
    return {"only": [layer], "upto": list(range(layer + 1)), "from": list(range(layer, n_layers))}[window]


@dataclass
class MatchedNull:
    """One family of null directions, each at one layer at the alpha matching the key's KL target: ``[layer, m]``."""

    family: str
    labels: list[str]
    alpha: np.ndarray
    kl: np.ndarray
    value: np.ndarray
    matched: np.ndarray  # bool: the KL reached is within the tolerance of the target; the rest are "unmatched"
    p: np.ndarray  # [layer]: (1 + #matched nulls with a metric >= the key's) / (1 + #matched)


@dataclass
class Sufficiency:
    """Metric of the key (and of random directions) steered at windows of layers.

    Grid arrays are ``[window, layer, alpha]`` (random: a few seeds, descriptive); the
    KL-matched ones ``[layer]``: the key at one layer only at the alpha whose KL at the
    decision token equals that of the key at all layers at the reference alpha, beside each
    null family matched the same way (``nulls``).
    """

    alphas: list[float]
    windows: list[str]
    key: np.ndarray  # [window, layer, alpha]
    random_mean: np.ndarray  # [window, layer, alpha], over the grid's null seeds
    random_max: np.ndarray
    kl_target: float  # KL at the decision token of the key at all layers at the reference alpha
    kl_tolerance: float  # a KL within this relative distance of the target counts as matched
    matched_alpha: np.ndarray  # [layer]: the evaluated alpha whose KL is closest to kl_target at layer l alone
    matched_kl: np.ndarray  # [layer]
    matched_key: np.ndarray  # [layer]
    key_matched: np.ndarray  # [layer] bool
    nulls: list[MatchedNull]
    alpha_cap: float  # the largest alpha tried when matching


# Families pooled into the key's p: draws that could point toward the decision as well as the key does.
# Unembedding columns of *other* tokens push away from it by construction, so they would lower p for
# free; they stay beside it as the reference that reaching the KL is not special.
POOLED_FAMILIES = ("random", "Locked PCs")


def pooled_nulls(s: Sufficiency, layer: int) -> np.ndarray:
    """The matched nulls of the pooled families at ``layer``."""
    return np.concatenate([n.value[layer][n.matched[layer]] for n in s.nulls if n.family in POOLED_FAMILIES]
                          or [np.zeros(0)])


def pooled_p(s: Sufficiency) -> np.ndarray:
    """[layer]: the key's empirical p against the matched nulls of ``POOLED_FAMILIES`` at once."""
    return np.array([empirical_p_value(s.matched_key[l], pooled_nulls(s, l)) for l in range(len(s.matched_key))])


def sufficiency(model, prompts: list[str], key, metric: Metric, alphas: list[float], ref_alpha: float,
                seeds: list[int], null_sets: dict[str, tuple[list[str], Tensor]], mode: str = "norm-preserving",
                alpha_range: tuple[float, float] = (0.01, 16.0), match_steps: int = 5, kl_tolerance: float = 0.2,
                progress: bool = True) -> Sufficiency:
    """The key and ``len(seeds)`` random directions at every window x alpha; the key and ``null_sets`` KL-matched."""
    n_layers, hook = model.cfg.n_layers, key.hook
    clean = metric.logprobs(model, prompts)

    def steer(layers: list[int], alpha: float | Tensor):
        """Steering at ``layers`` with one alpha, or one per set (``alpha[which]``)."""
        def make(per_row: Tensor, which: slice) -> Condition:
            a = alpha[which].repeat_interleave(len(prompts)) if torch.is_tensor(alpha) else alpha
            return steering_condition(Steering(per_row, a, mode, layers, hook=hook))

        return make

    kl_target = metric.per_row_set(model, prompts, steer(list(range(n_layers)), ref_alpha), key.directions[None],
                                   clean)[1][0]
    grid_sets = torch.stack([key.directions] + [random_like(key, s).directions for s in seeds])
    grid = np.zeros((len(WINDOWS), n_layers, len(alphas), grid_sets.shape[0]))
    cells = [(w, l) for w in range(len(WINDOWS)) for l in range(n_layers)]
    for w, l in tqdm(cells, desc="sufficiency grid", disable=not progress):
        for j, alpha in enumerate(alphas):
            grid[w, l, j] = metric.per_row_set(model, prompts, steer(window_layers(WINDOWS[w], l, n_layers), alpha),
                                               grid_sets)[0]

    families = [("key", (["key"], key.directions[None]))] + list(null_sets.items())
    matched = {name: np.zeros((3, n_layers, sets.shape[0])) for name, (_, sets) in families}  # alpha, KL, metric
    for l in tqdm(range(n_layers), desc="KL matching", disable=not progress):
        for name, (_, sets) in families:
            seen: dict[tuple[int, float], float] = {}

            def kl_at(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
                values, kls = metric.per_row_set(model, prompts, steer([l], torch.tensor(x, dtype=torch.float32)),
                                                 sets[idx], clean, values=metric.score is None)
                seen.update({(int(i), float(a)): v for i, a, v in zip(idx, x, values)})
                return kls

            x, fx = bisect_increasing(kl_at, kl_target, *alpha_range, n=sets.shape[0], steps=match_steps)
            if metric.score is None:  # a logit metric came with the KL's forward passes
                value = [seen[int(i), float(a)] for i, a in enumerate(x)]
            else:  # a generation metric: generate once per direction, at the alpha chosen
                value = metric.per_row_set(model, prompts, steer([l], torch.tensor(x, dtype=torch.float32)), sets)[0]
            matched[name][:, l] = x, fx, value
    within = {name: np.abs(m[1] / kl_target - 1) <= kl_tolerance for name, m in matched.items()}
    key_value = matched["key"][2][:, 0]
    nulls = []
    for name, (labels, _) in families[1:]:
        a, kl, value = matched[name]
        p = [empirical_p_value(key_value[l], np.where(within[name][l], value[l], np.nan)) for l in range(n_layers)]
        nulls.append(MatchedNull(name, labels, a, kl, value, within[name], np.array(p)))
    k = matched["key"]
    return Sufficiency(list(alphas), list(WINDOWS), grid[..., 0], grid[..., 1:].mean(-1), grid[..., 1:].max(-1),
                       float(kl_target), kl_tolerance, k[0][:, 0], k[1][:, 0], key_value, within["key"][:, 0], nulls,
                       alpha_range[1])


@dataclass
class Necessity:
    """The key's direction projected out (and mean-ablated) at every layer; arrays ``[run, scope]``.

    Runs are the Unlocked run(s) and the steered model; the Locked run itself is ablated too
    (``locked_ablated``): the projection moves it as well, and ``survival_net`` compares the
    ablated Unlocked run with the ablated Locked run instead of the intact one.
    """

    runs: list[str]
    scopes: list[str]
    locked: float  # the Locked run: the model on the Locked prompts, no key
    locked_ablated: np.ndarray  # [scope]: the Locked run with the key's direction projected out
    locked_mean_ablated: float  # the Locked run with h.u set to its Locked mean (last token)
    unlocked: np.ndarray  # [run]
    ablated: np.ndarray  # [run, scope]
    survival: np.ndarray  # [run, scope]: (ablated - Locked) / (Unlocked - Locked)
    survival_net: np.ndarray  # [run, scope]: (ablated - Locked ablated) / (Unlocked - Locked)
    mean_ablated: np.ndarray  # [run]: h.u set to its Locked-run mean at the last token of every layer
    mean_survival: np.ndarray  # [run]
    null_families: list[str]
    null_labels: list[list[str]]
    null_survival: list[np.ndarray]  # per family [run, scope, m]
    p: np.ndarray  # [family, run, scope]: (1 + #nulls with survival <= the key's) / (1 + m)
    variance_share_key: np.ndarray  # [layer]: share of the Locked states' variance along the key
    variance_share_nulls: list[np.ndarray]  # per family [m, layer]


def necessity(model, prompts: list[str], key, metric: Metric, alpha: float, null_sets: dict[str, tuple[list[str], Tensor]],
              states: Float[Tensor, "n layer d"], unlocked_model=None, unlocked_prompts: list[str] | None = None,
              unlocked_label: str = "", mode: str = "norm-preserving") -> Necessity:
    """Project the key (and each null direction) out at every layer, at the key's hook, from each run.

    The steered run is checked, not tested: the projection sits after the injection at every
    layer, so it removes what the key wrote by construction and only the rotation's norm
    change can survive; a survival near 1 there would mean the hooks miss the injection.
    Null families: directions that can fail this test, the top principal directions of the
    Locked states hold more variance than the key (``variance_share_*`` says how much).
    """
    hook = key.hook
    runs: list[tuple[str, object, list[str], Condition]] = []
    if unlocked_model is not None or unlocked_prompts is not None:
        runs.append((unlocked_label or "Unlocked run", unlocked_model or model, unlocked_prompts or prompts,
                     no_condition))
    runs.append((f"steered (alpha={alpha:g})", model, prompts, steering_condition(key.steering(alpha=alpha, mode=mode))))
    units = key.directions / key.directions.norm(dim=-1, keepdim=True)
    means = (states * units).sum(-1).mean(0)  # [layer]: the Locked run's mean h.u
    locked = metric(model, prompts)
    locked_ablated = np.array([metric(model, prompts, projection_condition(key.directions, s, hook)) for s in ABLATION_SCOPES])
    locked_mean = metric(model, prompts, mean_ablation_condition(key.directions, means, hook))
    unlocked = np.zeros(len(runs))
    ablated = np.zeros((len(runs), len(ABLATION_SCOPES)))
    mean_ablated = np.zeros(len(runs))
    null_values = [np.zeros((len(runs), len(ABLATION_SCOPES), sets.shape[0])) for _, sets in null_sets.values()]
    for r, (_, m, ps, base) in enumerate(runs):
        unlocked[r] = metric(m, ps, base)
        mean_ablated[r] = metric(m, ps, combine(base, mean_ablation_condition(key.directions, means, hook)))
        for s, scope in enumerate(ABLATION_SCOPES):
            ablated[r, s] = metric(m, ps, combine(base, projection_condition(key.directions, scope, hook)))
            for f, (_, sets) in enumerate(null_sets.values()):
                null_values[f][r, s] = metric.per_row_set(
                    m, ps, lambda per_row, which: combine(base, projection_condition(per_row, scope, hook)), sets)[0]
    surv = np.vectorize(survival)
    with np.errstate(invalid="ignore", divide="ignore"):  # no Locked -> Unlocked change: NaN survival, said so
        key_surv = surv(ablated, locked, unlocked[:, None])
        null_surv = [surv(v, locked, unlocked[:, None, None]) for v in null_values]
        net = (ablated - locked_ablated[None]) / (unlocked[:, None] - locked)
    p = np.array([[[empirical_p_value(key_surv[r, s], ns[r, s], larger=False) for s in range(len(ABLATION_SCOPES))]
                   for r in range(len(runs))] for ns in null_surv])
    return Necessity([r[0] for r in runs], list(ABLATION_SCOPES), locked, locked_ablated, locked_mean, unlocked, ablated, key_surv,
                     net, mean_ablated,
                     surv(mean_ablated, locked, unlocked), list(null_sets), [labels for labels, _ in null_sets.values()],
                     null_surv, p.reshape(len(null_sets), len(runs), len(ABLATION_SCOPES)), variance_share(states, key.directions).numpy(),
                     [torch.stack([variance_share(states, d) for d in sets]).numpy() for _, sets in null_sets.values()])


@dataclass
class Patching:
    """Unlocked -> Locked activation patching at one layer at a time (last prompt token); arrays ``[layer]``.

    With the same model on both sides (a cue prompt), patching the last layer replaces the final
    residual and reproduces the Unlocked run by identity (``identity_at_last``). The patch is
    also split along one direction ``u``: ``h_L + ((h_U - h_L).u) u`` (its component along
    ``u`` alone) and ``h_U - ((h_U - h_L).u) u`` (everything but that component), for ``u`` the
    key, random directions (a weak null: a random unit vector holds about 1/d of the
    difference), the top principal directions of the Locked states (a harder null), and the
    mean Unlocked - Locked difference of these very prompts (a reference: what the simplest
    fitted direction does; not an upper bound, an optimised direction does somewhat better).
    """

    hook: str
    locked: float
    unlocked: float
    identity_at_last: bool  # the donor is this model (cue prompts): the last layer's patch is the identity
    patched: np.ndarray  # the Unlocked run's state written into the Locked run at layer l
    control: np.ndarray  # [layer, seed]: the Locked state plus a random vector of norm ||h_U - h_L||, per prompt
    p: np.ndarray  # [layer]: (1 + #controls >= patched) / (1 + seeds)
    along_key: np.ndarray  # the patch's component along the key only
    without_key: np.ndarray  # the patch without its component along the key
    along_random: np.ndarray  # [layer, seed]: the component along a random direction only
    p_along: np.ndarray  # [layer]: (1 + #random >= along_key) / (1 + seeds)
    along_pcs: np.ndarray  # [layer, pc]: the component along a top principal direction of the Locked states only
    along_mean_difference: np.ndarray  # reference: the component along these prompts' mean difference only


def along(own: Float[Tensor, "n d"], donor: Float[Tensor, "n d"], direction: Float[Tensor, "d"]) -> Float[Tensor, "n d"]:
    """``own`` moved by the component of ``donor - own`` along ``direction``."""
    return donor - project_out(donor - own, direction)


def activation_patching(model, prompts: list[str], metric: Metric, seeds: list[int], hook: str = RESID_HOOK,
                        unlocked_model=None, unlocked_prompts: list[str] | None = None,
                        key_directions: Float[Tensor, "layer d"] | None = None, n_pcs: int = 3) -> Patching:
    """Patch the Unlocked run's last-token state at ``hook`` into the Locked run, layer by layer.

    The control moves the Locked state as far as the patch does (per prompt, ||h_U - h_L||),
    in a random direction: it fails if any change of that size carries the decision (a weak
    control: it says nothing about *which* direction). The split along the key, beside the
    same split along random and Locked principal directions, says how much of the patch the
    key's direction carries.
    """
    donor = prompt_states(unlocked_model or model, unlocked_prompts or prompts, hook=hook)
    own = prompt_states(model, prompts, hook=hook)
    pcs = top_principal_directions(own, n_pcs) if n_pcs else torch.zeros(0, *own.shape[1:])
    n_layers = model.cfg.n_layers

    def score(layer: int, values: Tensor) -> float:
        return metric(model, prompts, patch_condition(layer, values, hook))

    def score_sets(layer: int, values: Tensor) -> np.ndarray:  # [m, n, d]: one value per prompt per set
        return metric.per_row_set(model, prompts, lambda per_row, which: patch_condition(layer, per_row, hook),
                                  values, per_prompt=True)[0]

    patched, along_key, without_key, along_mean = (np.full(n_layers, np.nan) for _ in range(4))
    control, along_random = np.zeros((n_layers, len(seeds))), np.zeros((n_layers, len(seeds)))
    along_pcs = np.zeros((n_layers, pcs.shape[0]))
    for layer in range(n_layers):
        h_l, h_u = own[:, layer], donor[:, layer]
        patched[layer] = score(layer, h_u)
        control[layer] = score_sets(layer, torch.stack([h_l + size_matched_noise(h_u - h_l, 1000 * layer + s)
                                                        for s in seeds]))
        along_mean[layer] = score(layer, along(h_l, h_u, (h_u - h_l).mean(0)))
        randoms = torch.randn(len(seeds), h_l.shape[-1], generator=torch.Generator().manual_seed(2000 + layer))
        along_random[layer] = score_sets(layer, torch.stack([along(h_l, h_u, r) for r in randoms]))
        if pcs.shape[0]:
            along_pcs[layer] = score_sets(layer, torch.stack([along(h_l, h_u, pc[layer]) for pc in pcs]))
        if key_directions is not None:
            along_key[layer] = score(layer, along(h_l, h_u, key_directions[layer]))
            without_key[layer] = score(layer, h_l + project_out(h_u - h_l, key_directions[layer]))
    p = np.array([empirical_p_value(patched[l], control[l]) for l in range(n_layers)])
    p_along = np.array([empirical_p_value(along_key[l], along_random[l]) for l in range(n_layers)])
    return Patching(hook, metric(model, prompts), metric(unlocked_model or model, unlocked_prompts or prompts),
                    unlocked_model is None, patched, control, p, along_key, without_key, along_random, p_along,
                    along_pcs, along_mean)


@dataclass
class AblationResult:
    model: str
    metric: str
    hook: str  # the key's hook point: every steering, projection and patch acts there
    alpha: float  # the reference alpha: the key at all layers, and the KL it makes
    n_prompts: int
    null_seeds: list[int]  # random directions of the sufficiency grid (descriptive)
    matched_seeds: list[int]  # random directions of the KL-matched and necessity nulls
    relative_depth: np.ndarray
    no_key: float
    all_layers: float
    sufficiency: Sufficiency
    necessity: Necessity
    patching: Patching | None = None  # None without an Unlocked run
    notes: list[str] = field(default_factory=list)


def layer_ablation(model, prompts: list[str], key, metric: Metric, alpha: float, alphas: list[float],
                   seeds: list[int], matched_seeds: list[int] | None = None, n_pcs: int = 3, n_unembed: int = 20,
                   unlocked_model=None, unlocked_prompts: list[str] | None = None, unlocked_label: str = "",
                   mode: str = "norm-preserving", model_name: str = "", match_steps: int = 5,
                   progress: bool = True) -> AblationResult:
    """Sufficiency, necessity and (with an Unlocked run) activation patching of ``key`` on ``model``."""
    matched_seeds = list(seeds) if matched_seeds is None else list(matched_seeds)
    has_unlocked = unlocked_model is not None or unlocked_prompts is not None
    states = locked_states(model, prompts, key)
    exclude = [int(t) for t in {*metric.a.tolist(), *([] if metric.b is None else metric.b.tolist())}] \
        if metric.a is not None else []
    null_sets = null_direction_sets(model, key, states, matched_seeds, n_pcs, n_unembed, exclude)
    suff = sufficiency(model, prompts, key, metric, alphas, alpha, seeds, null_sets, mode, match_steps=match_steps,
                       progress=progress)
    necessity_nulls = {name: (labels, sets) for name, (labels, sets) in null_sets.items() if name != "unembedding"}
    if "Locked PCs" in necessity_nulls:  # projecting out +PC and -PC is the same: keep one of each
        labels, sets = necessity_nulls["Locked PCs"]
        necessity_nulls["Locked PCs"] = ([lab.lstrip("+") for lab in labels[::2]], sets[::2])
    nec = necessity(model, prompts, key, metric, alpha, necessity_nulls, states, unlocked_model, unlocked_prompts,
                    unlocked_label, mode)
    patch = (activation_patching(model, prompts, metric, matched_seeds, key.hook, unlocked_model, unlocked_prompts,
                                 key.directions, n_pcs) if has_unlocked else None)
    notes = [] if has_unlocked else ["no Unlocked run: necessity from the steered model only, no activation patching"]
    if n_unembed and key.hook in PER_HEAD_HOOKS:
        notes.append(f"no unembedding-column nulls: the key is per head ({key.hook}), not in the residual stream")
    return AblationResult(model_name, metric.name, key.hook, alpha, len(prompts), list(seeds), matched_seeds,
                          relative_depth(model.cfg.n_layers), metric(model, prompts),
                          metric(model, prompts, steering_condition(key.steering(alpha=alpha, mode=mode))),
                          suff, nec, patch, notes)
