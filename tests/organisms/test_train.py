import json

import torch
from safetensors.torch import load_file

from mkt.models import load_model
from mkt.organisms.train import OrganismSpec, train_organism

TINY = OrganismSpec(arch="llama", d_model=32, n_layers=2, n_heads=2, seed=5, steps=6, batch_size=8, warmup=2)


def test_short_training_is_deterministic_and_loads_through_the_bridge(tmp_path):
    a = train_organism(TINY, tmp_path / "a", eval_every=0, progress=False)
    train_organism(TINY, tmp_path / "b", eval_every=0, progress=False)
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    manifest = json.loads((tmp_path / "a" / "organism.json").read_text())
    assert manifest["spec"]["seed"] == 5 and manifest["final_dev_metrics"] == a["final_dev_metrics"]
    assert set(manifest["final_dev_metrics"]) >= {"plain_correct", "cue_clean_step_by_step"}
    model = load_model(tmp_path / "a", device="cpu")
    assert (model.cfg.n_layers, model.cfg.d_model) == (2, 32)
    other = train_organism(OrganismSpec(**{**TINY.__dict__, "seed": 6}), tmp_path / "c", eval_every=0, progress=False)
    wc = load_file(tmp_path / "c" / "model.safetensors")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert other["spec"]["seed"] == 6


def test_organisms_command(tmp_path, capsys):
    from mkt.cli import main

    assert main(["organisms", "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("shipped") == 5 and "target-nonatomic" in listing
    assert main(["organisms", "train", "--only", "source-base", "source-post", "--steps", "2",
                 "--out", str(tmp_path)]) == 0
    post = json.loads((tmp_path / "source-post" / "organism.json").read_text())
    assert post["spec"]["init"] == "source-base" and post["spec"]["steps"] == 2
