"""The whole UNLOCK recipe in one call: extract on the Source, align, transfer to the Target."""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mkt.activations import prompt_states
from mkt.alignment import SubspaceAlignment, cross_validate_rank, fit_alignment, transfer
from mkt.extract import extract_model_key, extract_prompt_key
from mkt.key import MasterKey
from mkt.models import RESID_HOOK, model_identity
from mkt.prompts import PromptFormat, PromptTemplate

ALIGNMENT_SETS = ("locked", "oracle-unlocked")
ORACLE_NOTE = ("oracle: the map was fitted on the Target's own Unlocked states, so it needs the capability "
               "already elicited in the Target and returns (nearly) the Target's own key; not a transfer")
RANK_GRID = (2, 4, 8, 16, 32, 64, 128)  # the ranks k="cv" tries (those the fitting folds allow)
RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # the ridge strengths k="cv" tries with method="ridge"


def map_beats_mean(heldout_error: list[float]) -> bool | None:
    """Whether a map predicts held-out Target states better than their mean (None: nothing held out).

    The relative error is 1.0 for the mean itself, so a mean error >= 1 says the map carries
    nothing from Source to Target and a transfer through it tests nothing.
    """
    finite = [e for e in heldout_error if e == e]
    return None if not finite else sum(finite) / len(finite) < 1.0


@dataclass
class TransferReport:
    """What a transfer did, with the numbers that say whether to trust it."""

    source_key: MasterKey
    target_key: MasterKey
    alignment: SubspaceAlignment
    coverage: list[float]  # per target layer: share of the key inside the Source's top-k subspace
    heldout_error: list[float]  # per target layer, on prompts the map was not fitted on
    alignment_set: str

    @property
    def is_oracle(self) -> bool:
        return self.alignment_set == "oracle-unlocked"

    @property
    def beats_mean(self) -> bool | None:
        """Whether the map beats the mean on held-out prompts (``map_beats_mean``)."""
        return map_beats_mean(self.heldout_error)

    def summary(self) -> dict:
        mean_error = sum(self.heldout_error) / len(self.heldout_error)
        return dict(oracle=self.is_oracle, map_beats_mean=self.beats_mean,
            # per layer 1 - e^2: the share of the held-out states' spread about their mean the map predicts
            heldout_variance_explained=(sum(1 - e**2 for e in self.heldout_error) / len(self.heldout_error)
                                        if mean_error == mean_error else None),
            rank_selection=self.alignment.diagnostics.get("rank_selection"),
            source=self.alignment.source.name, target=self.alignment.target.name, k=self.alignment.k,
            method=self.alignment.method, center=self.alignment.center, alignment_set=self.alignment_set,
            n_key=self.source_key.provenance.get("n"), n_align=self.alignment.n,
            mean_coverage=sum(self.coverage) / len(self.coverage), coverage=self.coverage,
            mean_heldout_error=mean_error,
            heldout_error=self.heldout_error,
        )


def alignment_prompts(questions: list[str], locked: PromptTemplate | PromptFormat,
                      unlocked: PromptTemplate | PromptFormat | None, alignment_set: str,
                      tokenizer=None) -> list[str]:
    """The paper's protocol (``locked``: Locked prompts only), or Locked + Unlocked prompts, in
    one model's format (``tokenizer``: that model's, needed for chat formats).

    ``oracle-unlocked`` runs the Target on Unlocked prompts too, so least squares maps
    whatever separates the two groups in the Source onto what separates them in the
    Target: the result is the Target's own key seen through the map. It is an oracle
    (it needs the capability already elicited in the Target), never a transfer.
    """
    if alignment_set == "mixed":
        raise ValueError("the 'mixed' alignment set is now called 'oracle-unlocked': it fits the map on the "
                         "Target's own Unlocked states, an oracle rather than a transfer")
    if alignment_set not in ALIGNMENT_SETS:
        raise ValueError(f"unknown alignment set {alignment_set!r}: use one of {ALIGNMENT_SETS}")
    prompts = PromptFormat.of(locked).render_all(tokenizer, questions)
    if alignment_set == "oracle-unlocked":
        if unlocked is None:
            raise ValueError("the oracle-unlocked alignment set needs an Unlocked template")
        prompts += PromptFormat.of(unlocked).render_all(tokenizer, questions)
    return prompts


@dataclass(frozen=True)
class TransferFormats:
    """Each model's Locked and Unlocked formats: a Llama Target never reads a Qwen Source's chat markup.

    ``unlocked`` is None for a model-induced key (one format, two models); ``target_locked`` and
    ``target_unlocked`` default to the Source's (see ``of``).
    """

    locked: PromptFormat
    unlocked: PromptFormat | None
    target_locked: PromptFormat
    target_unlocked: PromptFormat | None

    @classmethod
    def of(cls, locked: str | PromptTemplate | PromptFormat, unlocked: str | PromptTemplate | PromptFormat | None = None,
           target_locked: str | PromptTemplate | PromptFormat | None = None,
           target_unlocked: str | PromptTemplate | PromptFormat | None = None) -> TransferFormats:
        """Formats from templates or formats; the Target's default to the Source's."""
        source_locked = PromptFormat.of(locked)
        source_unlocked = PromptFormat.of(unlocked) if unlocked is not None else None
        return cls(source_locked, source_unlocked,
                   PromptFormat.of(target_locked) if target_locked is not None else source_locked,
                   PromptFormat.of(target_unlocked) if target_unlocked is not None else source_unlocked)

    def all(self) -> tuple[PromptFormat | None, ...]:
        """(Source Locked, Source Unlocked, Target Locked, Target Unlocked)."""
        return self.locked, self.unlocked, self.target_locked, self.target_unlocked


def extract_source_key(source, questions: list[str], formats: TransferFormats, unlocked_model=None,
                       aggregator: str = "mean", batch_size: int = 32, progress: bool = False, hook: str = RESID_HOOK,
                       position: str = "last") -> MasterKey:
    """The Source's key: model-induced with ``unlocked_model``, else prompt-induced.

    Args:
        source: the Source bridge (the Locked variant for a model-induced key).
        questions: the questions the key is averaged over.
        formats: the Source's formats (``formats.locked``; ``formats.unlocked`` for a prompt-induced key).
        unlocked_model: the post-trained Source, for a model-induced key.
        aggregator, batch_size, progress, hook, position: as in ``mkt.extract.extract_prompt_key``.

    Returns:
        The key, ``[n_layers, width]`` directions at ``hook``.

    Raises:
        ValueError: neither an Unlocked format nor an Unlocked model.
    """
    if unlocked_model is not None:
        return extract_model_key(unlocked_model, source, questions, formats.locked, aggregator, batch_size, progress,
                                 hook, position)
    if formats.unlocked is not None:
        return extract_prompt_key(source, questions, formats.locked, formats.unlocked, aggregator, batch_size,
                                  progress, hook, position)
    raise ValueError("give an Unlocked template (prompt-induced) or an Unlocked model (model-induced)")


def alignment_states(model, questions: list[str], locked: PromptFormat, unlocked: PromptFormat | None,
                     alignment_set: str = "locked", hook: str = RESID_HOOK, position: str = "last",
                     batch_size: int = 32, progress: bool = False) -> Float[Tensor, "n layer d"]:
    """``model``'s states on the alignment prompts of ``questions``, in its own formats.

    Args:
        model: a TransformerBridge.
        questions: the alignment questions.
        locked, unlocked: ``model``'s formats (``unlocked`` serves only the ``oracle-unlocked`` set).
        alignment_set: ``locked`` (the paper's) or ``oracle-unlocked`` (``alignment_prompts``).
        hook, position, batch_size, progress: as in ``mkt.activations.prompt_states``.

    Returns:
        ``[n_prompts, n_layers, width]`` states.
    """
    prompts = alignment_prompts(questions, locked, unlocked, alignment_set, model.tokenizer)
    return prompt_states(model, prompts, None, hook, position, batch_size, progress)


def align_models(source, target, questions: list[str], formats: TransferFormats, alignment_set: str = "locked",
                 k: int = 32, method: str = "lstsq", center: bool = False, ridge: float = 1e-2,
                 hook: str = RESID_HOOK, position: str = "last", batch_size: int = 32,
                 progress: bool = False) -> SubspaceAlignment:
    """The rank-``k`` map from ``source``'s states to ``target``'s on the alignment prompts of ``questions``.

    Each model reads the questions in its own format, both at ``hook`` and ``position``: the
    recipe ``run_transfer``, ``mkt align`` and the sweep share.

    Args:
        source, target: the two bridges.
        questions: the alignment questions.
        formats: each model's formats.
        alignment_set: ``locked`` (the paper's) or ``oracle-unlocked`` (an oracle, never a transfer).
        k, method, center, ridge: as in ``mkt.alignment.fit_alignment``.
        hook, position, batch_size, progress: as in ``mkt.activations.prompt_states``.

    Returns:
        The fitted ``SubspaceAlignment`` (``[n_layers]`` maps of rank ``k``).
    """
    reading = dict(alignment_set=alignment_set, hook=hook, position=position, batch_size=batch_size,
                   progress=progress)
    x_s = alignment_states(source, questions, formats.locked, formats.unlocked, **reading)
    x_t = alignment_states(target, questions, formats.target_locked, formats.target_unlocked, **reading)
    return fit_alignment(x_s, x_t, model_identity(source), model_identity(target), k, method, center, ridge=ridge,
                         hook=hook, position=position)


def run_transfer(
    source,
    target,
    key_questions: list[str],
    align_questions: list[str],
    locked: str | PromptFormat,
    unlocked: str | PromptFormat | None = None,
    source_unlocked_model=None,
    aggregator: str = "mean",
    k: int | str = 32,
    method: str = "lstsq",
    center: bool = False,
    ridge: float = 1e-2,
    alignment_set: str = "locked",
    heldout_fraction: float = 0.2,
    ks: tuple[int, ...] = RANK_GRID,
    ridges: tuple[float, ...] = RIDGE_GRID,
    folds: int = 5,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    source_key: MasterKey | None = None,
    target_locked: str | PromptFormat | None = None,
    target_unlocked: str | PromptFormat | None = None,
    hook: str = RESID_HOOK,
    position: str = "last",
) -> TransferReport:
    """Extract a key on ``source``, align ``source`` to ``target`` and transfer the key.

    Prompt-induced when ``unlocked`` is a template; model-induced when
    ``source_unlocked_model`` is given (``source`` is then the Locked variant; ``unlocked``
    then only serves the ``oracle-unlocked`` alignment set). A share
    ``heldout_fraction`` of the alignment questions is kept out of the fit to measure
    the map's error. Pass ``source_key`` to reuse an extracted key.

    ``locked`` / ``unlocked`` are the Source's formats (a template, or a ``PromptFormat`` in its
    chat template); ``target_locked`` / ``target_unlocked`` the Target's (default: the same).
    Each model reads the alignment questions in its own format, so a Llama Target never reads
    a Qwen Source's chat markup as text. The key and the map are read at the same ``hook`` and
    ``position`` (``mkt.activations.prompt_states``).

    ``k="cv"`` chooses the rank among ``ks`` (and, for ``method="ridge"``, the strength among
    ``ridges``) by ``folds``-fold cross-validated error on the fitting questions
    (``mkt.alignment.cross_validate_rank``), recorded in ``alignment.diagnostics["rank_selection"]``;
    the held-out questions stay out of the choice, so their error is an honest estimate. When
    the map does not beat the mean on them (mean relative error >= 1), a warning says so and
    ``summary()["map_beats_mean"]`` is False: a transfer through such a map tests nothing.
    """
    if k != "cv" and not (isinstance(k, int) and not isinstance(k, bool)):
        raise ValueError(f"k must be a whole number or 'cv' (chosen by cross-validation), got {k!r}")
    if not (ridge >= 0 and ridge == ridge and ridge != float("inf")):  # checked before any forward pass
        raise ValueError(f"ridge strength must be a finite number >= 0, got {ridge}")
    formats = TransferFormats.of(locked, unlocked, target_locked, target_unlocked)
    if source_key is None:
        source_key = extract_source_key(source, key_questions, formats, source_unlocked_model, aggregator,
                                        batch_size, progress, hook, position)
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    order = list(range(len(align_questions)))
    random.Random(seed).shuffle(order)
    n_held = int(round(heldout_fraction * len(order)))
    fit_q = [align_questions[i] for i in order[n_held:]]
    held_q = [align_questions[i] for i in order[:n_held]]
    position = source_key.provenance.get("position", position)  # the map is read where the key was
    reading = dict(alignment_set=alignment_set, hook=source_key.hook, position=position, batch_size=batch_size,
                   progress=progress)
    x_s = alignment_states(source, fit_q, formats.locked, formats.unlocked, **reading)
    x_t = alignment_states(target, fit_q, formats.target_locked, formats.target_unlocked, **reading)
    ident_s, ident_t = model_identity(source), model_identity(target)
    selection = None
    if k == "cv":  # rows are the fitting questions once per prompt set, in order: group them by question
        selection = cross_validate_rank(x_s, x_t, ident_s, ident_t, list(ks), method, center, list(ridges), folds,
                                        [i % len(fit_q) for i in range(x_s.shape[0])], seed, source_key.hook)
        k, ridge = selection.k, selection.ridge
    alignment = fit_alignment(x_s, x_t, ident_s, ident_t, k, method, center, ridge=ridge, hook=source_key.hook,
                              position=position)
    if selection is not None:
        alignment.diagnostics["rank_selection"] = selection.to_dict()
        if not held_q and not selection.beats_mean:  # nothing held out: the cross-validated error is all we have
            warnings.warn(f"the {ident_s.name} -> {ident_t.name} map does NOT beat the mean in cross-validation "
                          f"(best k={k}: mean relative error {selection.error:.3f} >= 1): a transfer through it "
                          "tests nothing; use more alignment questions", stacklevel=2)
    if held_q:
        err = alignment.relative_error(
            alignment_states(source, held_q, formats.locked, formats.unlocked, **reading),
            alignment_states(target, held_q, formats.target_locked, formats.target_unlocked, **reading))
        alignment.diagnostics["heldout_relative_error"] = err.tolist()
        if not map_beats_mean(err.tolist()):
            warnings.warn(f"the {alignment.source.name} -> {alignment.target.name} map (k={k}, {method}) does NOT "
                          f"beat the mean on {len(held_q)} held-out questions (mean relative error "
                          f"{float(err.mean()):.3f} >= 1): a transfer through it tests nothing; use more alignment "
                          "questions or k='cv'", stacklevel=2)
    target_key = transfer(source_key, alignment)
    if alignment_set == "oracle-unlocked":
        target_key.provenance["oracle"] = ORACLE_NOTE
    coverage = alignment.coverage(source_key.directions).tolist()
    heldout = alignment.diagnostics.get("heldout_relative_error", [float("nan")] * len(coverage))
    return TransferReport(source_key, target_key, alignment, coverage, heldout, alignment_set)


def cosine_per_layer(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Cosine of ``a`` and ``b`` (``[layer, d]`` each) per layer, in float64."""
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).tolist()
