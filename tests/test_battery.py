"""A battery (conditions x alphas x prompts in one call) against each cell generated alone."""

from __future__ import annotations

import pytest
import torch

from mkt.battery import Battery
from mkt.engines import as_engine
from mkt.generation import GenerationRequest, generate
from mkt.steering import Steering
from tests.conftest import PROMPTS


def _conditions(model, n: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {f"c{i}": torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g) for i in range(n)}


@pytest.mark.parametrize("scope", ["prompt-last", "prompt-last+generated"])
def test_one_call_equals_each_cell_alone(tiny_models, scope):
    for name, model in tiny_models.items():
        battery = Battery.grid(_conditions(model), alphas=(0.3, 1.5), prompts=PROMPTS)
        together = battery.split(as_engine(model).run(
            battery.prompts, GenerationRequest(10, battery.steering(scope=scope), batch_size=6, record_entropy=True)))
        assert len(together) == 8
        for (condition, alpha), gens in together.items():
            alone = generate(model, PROMPTS, 10, Steering(battery.conditions[condition], alpha=alpha, scope=scope),
                             record_entropy=True)
            assert [g.prompt for g in gens] == PROMPTS
            assert [g.token_ids for g in gens] == [a.token_ids for a in alone], (name, condition, alpha)
            for g, a in zip(gens, alone):
                assert g.entropies == pytest.approx(a.entropies, abs=1e-4)


def test_cells_differ_so_the_rows_are_really_steered_apart(qwen):
    battery = Battery.grid(_conditions(qwen), alphas=(2.0,), prompts=PROMPTS)
    together = battery.split(generate(qwen, battery.prompts, 10, battery.steering(), batch_size=8))
    assert len({tuple(tuple(g.token_ids) for g in gens) for gens in together.values()}) > 1


def test_each_set_travels_once_and_each_cell_may_have_its_own_alpha(qwen):
    conditions = _conditions(qwen, 3)
    battery = Battery(conditions, [("c0", 0.1), ("c2", 0.5)], PROMPTS[:2])
    steering = battery.steering()
    assert steering.directions.shape == (3, qwen.cfg.n_layers, qwen.cfg.d_model)
    assert steering.sets.tolist() == [0, 2, 0, 2] and steering.alpha.tolist() == pytest.approx([0.1, 0.5] * 2)
    assert battery.prompts == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2


def test_bad_batteries_are_refused(qwen):
    conditions = _conditions(qwen, 2)
    with pytest.raises(ValueError, match="conditions \\['nope'\\]"):
        Battery(conditions, [("nope", 0.1)], PROMPTS)
    with pytest.raises(ValueError, match="listed twice"):
        Battery(conditions, [("c0", 0.1), ("c0", 0.1)], PROMPTS)
    with pytest.raises(ValueError, match="one per row"):
        Battery.grid(conditions, (0.1,), PROMPTS).split([1, 2, 3])
    with pytest.raises(ValueError, match="sets must lie"):
        Steering(torch.randn(2, qwen.cfg.n_layers, qwen.cfg.d_model), sets=torch.tensor([0, 2]))
