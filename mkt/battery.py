"""A battery of steered conditions in one engine call: every (condition, alpha) cell x every prompt.

A transfer is judged against 20+ null draws, controls and an alpha grid, each on every prompt.
Run one by one, that is 100 generations of a few prompts each; as a battery it is one call of
conditions x alphas x prompts rows, each row with its own direction set and strength
(:class:`~mkt.steering.Steering` with ``sets``: each set travels once). Rows are laid out
prompt by prompt, so a batch holds few distinct prompts (little padding; the TransformerLens
engine prefills a prompt's shared tokens once for all its rows).

    battery = Battery.grid({"key": key.directions, **nulls}, alphas=(0.05, 0.1, 0.2, 0.5), prompts=dev)
    gens = engine.run(battery.prompts, GenerationRequest(64, battery.steering(), batch_size=32))
    by_cell = battery.split(gens)          # {("key", 0.1): [Generation per prompt], ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor

from mkt.models import RESID_HOOK
from mkt.steering import Steering

Cell = tuple[str, float]  # (condition name, alpha)
T = TypeVar("T")


@dataclass
class Battery:
    """Cells (condition, alpha) x prompts as the rows of one steered generation.

    Args:
        conditions: each condition's directions, ``[n_layers, d_model]`` (all the same shape).
        cells: the (condition, alpha) pairs to run, in order (a grid, or each condition at its
            own chosen alpha).
        prompts: the formatted prompts; every cell runs on each of them.
    """

    conditions: dict[str, Float[Tensor, "layer d"]]
    cells: list[Cell]
    prompts_per_cell: list[str]

    def __post_init__(self) -> None:
        if not self.cells or not self.prompts_per_cell:
            raise ValueError("a battery needs at least one (condition, alpha) cell and one prompt")
        unknown = sorted({c for c, _ in self.cells} - set(self.conditions))
        if unknown:
            raise ValueError(f"cells name conditions {unknown} that the battery does not hold: "
                             f"it holds {sorted(self.conditions)}")
        shapes = {tuple(d.shape) for d in self.conditions.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"every condition's directions must be one [n_layers, d_model] shape, got {sorted(shapes)}")
        self.cells = [(c, float(a)) for c, a in self.cells]
        if len(set(self.cells)) != len(self.cells):
            raise ValueError("a (condition, alpha) cell is listed twice: list each once")

    @classmethod
    def grid(cls, conditions: dict[str, Tensor], alphas: Sequence[float], prompts: list[str]) -> "Battery":
        """Every condition at every alpha on every prompt."""
        return cls(conditions, [(c, a) for c in conditions for a in alphas], list(prompts))

    @property
    def prompts(self) -> list[str]:
        """One prompt per row: each prompt once per cell, a prompt's rows side by side."""
        return [p for p in self.prompts_per_cell for _ in self.cells]

    def steering(self, mode: str = "norm-preserving", layers: list[int] | None = None, scope: str = "prompt-last",
                 hook: str = RESID_HOOK) -> Steering:
        """The rows' steering: the conditions' directions as a table, a set index and an alpha per row."""
        names = list(self.conditions)
        table = torch.stack([self.conditions[n].float() for n in names])
        cell_sets = torch.tensor([names.index(c) for c, _ in self.cells])
        cell_alphas = torch.tensor([a for _, a in self.cells], dtype=torch.float32)
        n = len(self.prompts_per_cell)
        return Steering(table, alpha=cell_alphas.repeat(n), mode=mode, layers=layers, scope=scope, hook=hook,
                        sets=cell_sets.repeat(n))

    def split(self, rows: Sequence[T]) -> dict[Cell, list[T]]:
        """Per cell, its rows' results in prompt order (``rows``: one result per row of :attr:`prompts`)."""
        n_cells = len(self.cells)
        if len(rows) != n_cells * len(self.prompts_per_cell):
            raise ValueError(f"{len(rows)} results for a battery of {n_cells} cells x "
                             f"{len(self.prompts_per_cell)} prompts: give one per row")
        return {cell: list(rows[i::n_cells]) for i, cell in enumerate(self.cells)}
