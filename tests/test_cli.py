"""The mkt command line end to end on tiny local models."""

import json

import pytest
import torch

from mkt.alignment import SubspaceAlignment, transfer
from mkt.cli import main
from mkt.pack import CapabilityPack

LOCKED, UNLOCKED = "Q:{question}|A:", "S:{question}|A:"


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("\n".join(f"{a}+{b}" for a, b in zip(range(10, 40), range(50, 80))))
    return path


def test_extract_align_transfer_generate_info(tmp_path, tiny_dirs, questions, capsys):
    src, tgt = str(tiny_dirs["qwen2"]), str(tiny_dirs["llama"])
    assert main(["extract", "--model", src, "--questions", str(questions), "--locked", LOCKED,
                 "--unlocked", UNLOCKED, "--out", str(tmp_path / "key"), "--device", "cpu"]) == 0
    key_pack = CapabilityPack.load(tmp_path / "key")
    assert key_pack.key.directions.shape == (3, 64)

    assert main(["align", "--source", src, "--target", tgt, "--questions", str(questions), "--locked", LOCKED,
                 "--k", "8", "--out", str(tmp_path / "a.safetensors"), "--device", "cpu"]) == 0
    al = SubspaceAlignment.load(tmp_path / "a.safetensors")
    assert (al.k, al.n, al.layer_map) == (8, 30, [0, 0, 1, 1, 2])

    assert main(["transfer", "--source", src, "--target", tgt, "--questions", str(questions), "--locked", LOCKED,
                 "--unlocked", UNLOCKED, "--k", "8", "--alpha", "0.3",
                 "--out", str(tmp_path / "pack"), "--device", "cpu"]) == 0
    pack = CapabilityPack.load(tmp_path / "pack")
    assert pack.key.directions.shape == (5, 48) and pack.alpha == 0.3
    report = json.loads((tmp_path / "pack" / "transfer_report.json").read_text())
    assert report["n_align"] == 24 and len(report["coverage"]) == 5  # the paper's protocol: 24 Locked prompts
    assert report["alignment_set"] == "locked" and not report["oracle"] and len(report["cosine_with_own_key"]) == 5
    # the pack keeps what a later null test needs: the Source key and the map
    source_key = CapabilityPack.load(tmp_path / "pack" / "source-key").key
    moved = transfer(source_key, SubspaceAlignment.load(tmp_path / "pack" / "alignment.safetensors"))
    assert torch.allclose(moved.directions, pack.key.directions, atol=1e-5)
    # the pack's key is the library's transfer of the extracted key through the same alignment
    assert torch.isfinite(pack.key.directions).all()

    capsys.readouterr()
    assert main(["generate", "--model", tgt, "--pack", str(tmp_path / "pack"), "--prompt", "Q:12+34|A:",
                 "--max-new-tokens", "5", "--device", "cpu"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["prompt"] == "Q:12+34|A:" and rec["n_tokens"] <= 5

    assert main(["info", str(tmp_path / "pack")]) == 0
    out = capsys.readouterr().out
    assert "llama (5 layers x 48)" in out and "coverage" in out


def test_an_oracle_pack_says_so_wherever_it_goes(tmp_path, tiny_dirs, questions, capsys):
    src, tgt = str(tiny_dirs["qwen2"]), str(tiny_dirs["llama"])
    assert main(["transfer", "--source", src, "--target", tgt, "--questions", str(questions), "--locked", LOCKED,
                 "--unlocked", UNLOCKED, "--k", "4", "--alignment-set", "oracle-unlocked",
                 "--out", str(tmp_path / "oracle"), "--device", "cpu"]) == 0
    assert "ORACLE: oracle: the map was fitted on the Target's own Unlocked states" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "oracle")]) == 0
    assert "ORACLE" in capsys.readouterr().out
    assert main(["transfer", "--source", src, "--target", tgt, "--questions", str(questions), "--locked", LOCKED,
                 "--unlocked", UNLOCKED, "--k", "4", "--out", str(tmp_path / "paper"), "--device", "cpu"]) == 0
    assert main(["info", str(tmp_path / "paper")]) == 0
    assert "ORACLE" not in capsys.readouterr().out


def test_cli_errors_are_clear(tmp_path, tiny_dirs, questions, capsys):
    src, tgt = str(tiny_dirs["qwen2"]), str(tiny_dirs["llama"])
    assert main(["align", "--source", src, "--target", tgt, "--questions", str(questions), "--locked", LOCKED,
                 "--k", "500", "--out", str(tmp_path / "a.safetensors"), "--device", "cpu"]) == 2
    assert "k=500 is out of range" in capsys.readouterr().err
    assert main(["extract", "--model", src, "--questions", str(questions), "--locked", "no slot",
                 "--unlocked", UNLOCKED, "--out", str(tmp_path / "k"), "--device", "cpu"]) == 2
    assert "{question}" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "nothing is not a capability pack directory (no such path)" in capsys.readouterr().err
    # a pack for the Source applied to the Target
    main(["extract", "--model", src, "--questions", str(questions), "--locked", LOCKED, "--unlocked", UNLOCKED,
          "--out", str(tmp_path / "key"), "--device", "cpu"])
    capsys.readouterr()
    assert main(["generate", "--model", tgt, "--pack", str(tmp_path / "key"), "--prompt", "Q:1|A:",
                 "--device", "cpu"]) == 2
    assert "made for 'qwen2'" in capsys.readouterr().err


def test_help_explains_every_argument(capsys):
    with pytest.raises(SystemExit):
        main(["transfer", "--help"])
    text = capsys.readouterr().out
    for flag in ("--k", "--alignment-set", "--alpha", "--mode", "--heldout-fraction", "--trust-remote-code"):
        assert flag in text


@pytest.mark.parametrize("argv,message", [
    (["eval", "--model", "m", "--task", "organism", "--out", "o", "--limit", "0"], "--limit: must be 1 or more, got 0"),
    (["eval", "--model", "m", "--task", "organism", "--out", "o", "--n-samples", "0"], "--n-samples: must be 1 or more"),
    (["eval", "--model", "m", "--task", "organism", "--out", "o", "--batch-size", "-1"], "--batch-size: must be 1 or"),
    (["eval", "--model", "m", "--task", "organism", "--out", "o", "--stop", ""], "--stop: an empty stop string"),
    (["eval", "--model", "m", "--task", "organism", "--out", "o", "--dtype", "fp8"], "--dtype: unknown dtype 'fp8'"),
    (["eval", "--model", "m", "--task", "organism", "--out", "o", "--device", "gpu0"], "--device: 'gpu0' is not a device"),
    (["transfer", "--source", "a", "--target", "b", "--questions", "q", "--locked", "{question}", "--out", "o",
      "--k", "8.5"], "--k: '8.5' is not an integer"),
    (["transfer", "--source", "a", "--target", "b", "--questions", "q", "--locked", "{question}", "--out", "o",
      "--ridge", "nan"], "--ridge: 'nan' is not a finite number"),
    (["sweep", "--source", "a", "--target", "b", "--task", "organism", "--out", "o", "--alphas", "0.1", "-1"],
     "--alphas: must be greater than 0"),
])
def test_bad_arguments_are_refused_before_anything_loads(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_dtype_aliases_unwritable_out_and_unexpected_errors(tmp_path, capsys, monkeypatch):
    from mkt.cli import build_parser
    from mkt.pack import CapabilityPack

    args = build_parser().parse_args(["eval", "--model", "m", "--task", "organism", "--out", "o", "--dtype", "bf16"])
    assert args.dtype == "bfloat16"
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker / "sub")]) == 2
    assert "cannot be created" in capsys.readouterr().err

    def broken(path):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(CapabilityPack, "load", broken)
    assert main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unexpected error: RuntimeError: disk on fire (rerun with --debug" in err and len(err.splitlines()) == 1
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["--debug", "info", str(tmp_path)])
