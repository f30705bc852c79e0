"""Interrupted evaluations and sweeps resume to the uninterrupted result, whatever the interruption
point; malformed lines in their resumable files are dropped by name, never a KeyError (issue 23)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mkt.errors import CorruptArtifactError
from mkt.eval.runner import run_eval
from mkt.eval.sweep import SweepSpec, run_sweep
from mkt.eval.tasks import organism_examples, template_for
from mkt.models import load_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def source():
    return load_model("organism:source-base", device="cpu")


def _records(path: Path) -> list[dict]:
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["id"])


def test_malformed_records_are_dropped_by_line_and_their_examples_run_again(tmp_path, source):
    examples = organism_examples(8, "test")
    template = template_for("organism", "direct")
    full = run_eval(source, examples, template, tmp_path / "full", max_new_tokens=20, progress=False)
    run_eval(source, examples, template, tmp_path / "cut", max_new_tokens=20, progress=False)
    path = tmp_path / "cut" / "records.jsonl"
    lines = path.read_bytes().splitlines()
    wrong_type = json.dumps(json.loads(lines[3]) | {"correct": "yes"}).encode()
    # was: `mkt eval` resume failed with "error: 'id'" on the {} line
    path.write_bytes(b"\n".join([lines[0], b"{}", b"[1, 2]", b'{"id": "test-1"', b"\xff\xfe", wrong_type,
                                 *lines[4:]]) + b"\n")
    with pytest.warns(UserWarning, match=r"records.jsonl: dropped 5 malformed line\(s\) \(line 2, 3, 4, 5, 6\); "
                                         "those examples are run again"):
        resumed = run_eval(source, examples, template, tmp_path / "cut", max_new_tokens=20, progress=False)
    assert resumed == full | {"config": resumed["config"]}
    assert _records(path) == _records(tmp_path / "full" / "records.jsonl")


def test_a_corrupt_run_configuration_is_refused_by_name(tmp_path, source):
    examples = organism_examples(2, "test")
    (tmp_path / "run.json").write_text('{"template": ')
    with pytest.raises(CorruptArtifactError, match=r"run.json is not valid JSON .*; delete .* to start the run over"):
        run_eval(source, examples, "Q:{question}|A:", tmp_path, max_new_tokens=4, progress=False)
    (tmp_path / "run.json").write_text("[]")
    with pytest.raises(CorruptArtifactError, match="run.json holds a JSON list, not a run configuration"):
        run_eval(source, examples, "Q:{question}|A:", tmp_path, max_new_tokens=4, progress=False)


SWEEP = SweepSpec(alphas=(0.1, 0.5), ks=(4,), ns=(8, 16), layer_subsets=(None, (0, 1)), max_new_tokens=20,
                  null_seeds=0)


def _sweep(source, out):
    questions = [e.question for e in organism_examples(16, "train", seed=2)]
    return run_sweep(source, source, questions, organism_examples(6, "dev"), organism_examples(6, "test"),
                     "Q:{question}|A:", "S:{question}|A:", out, SWEEP, progress=False)


def test_a_finished_sweep_reruns_and_malformed_rows_are_dropped(tmp_path, source):
    full = _sweep(source, tmp_path / "full")
    csv = (tmp_path / "full" / "sweep.csv").read_text().splitlines()
    # every configuration finished, the result lost: the rerun used to fail with KeyError (`mkt sweep: error: 8`)
    (tmp_path / "full" / "sweep.json").unlink()
    assert _sweep(source, tmp_path / "full") == full
    out = tmp_path / "cut"
    out.mkdir()
    (out / "sweep_run.json").write_text((tmp_path / "full" / "sweep_run.json").read_text())
    (out / "sweep.csv").write_text("\n".join([csv[0], csv[1], "8,4", "x,4,all,0.1,0.5,0.5", "8,4,all,0.3,0.5,0.5",
                                              "16,4,all,0.1,1.5,0.5", *csv[2:5]]) + "\n")
    with pytest.warns(UserWarning, match=r"sweep.csv: dropped 4 malformed line\(s\) \(line 3, 4, 5, 6\)"):
        assert _sweep(source, out) == full
    assert sorted((out / "sweep.csv").read_text().splitlines()) == sorted(csv)
    (out / "sweep.csv").write_text("alpha,n\n0.1,8\n")
    with pytest.raises(ValueError, match="sweep.csv does not start with the header 'n,k,layers,alpha,"):
        _sweep(source, out)


def _sweep_cli(out: Path) -> list[str]:
    # Ctrl-C raises KeyboardInterrupt even where the test runs in a background job (whose SIGINT is ignored)
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from mkt.cli import main; sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", code, "sweep", "--source", "organism:source-base", "--target",
            "organism:source-base", "--task", "organism", "--ns", "8", "16", "--ks", "4", "--alphas", "0.1", "0.5",
            "--layers", "all", "0-1", "--dev-size", "6", "--test-size", "6", "--null-seeds", "2",
            "--max-new-tokens", "20", "--device", "cpu", "--out", str(out)]


def _data_rows(out: Path) -> int:
    try:
        return max(0, len((out / "sweep.csv").read_bytes().split(b"\n")) - 2)
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_a_sweep_killed_at_any_point_reruns_to_the_uninterrupted_result(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    assert subprocess.run(_sweep_cli(tmp_path / "full"), env=env, capture_output=True).returncode == 0
    full = json.loads((tmp_path / "full" / "sweep.json").read_text())
    out = tmp_path / "cut"
    # one directory, interrupted again and again: while loading, after 2 and 6 of the 8 rows (mid-grid),
    # after every row (in the baselines or the null draws); Ctrl-C (SIGINT) where most of the run is still
    # ahead (at 6 rows of a resumed run, the rest can finish before the signal is handled)
    for rows, sig in ((0, signal.SIGKILL), (2, signal.SIGINT), (6, signal.SIGKILL), (8, signal.SIGKILL)):
        proc = subprocess.Popen(_sweep_cli(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while _data_rows(out) < rows and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if rows == 0:
            time.sleep(1.0)
        assert proc.poll() is None, f"the sweep ended before the kill point of {rows} rows"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and b"interrupted; everything written so far is kept" in err
        assert not (out / "sweep.json").exists()
    done = subprocess.run(_sweep_cli(out), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resumed = json.loads((out / "sweep.json").read_text())
    assert resumed == full
    assert sorted((out / "sweep.csv").read_text().splitlines()) == \
        sorted((tmp_path / "full" / "sweep.csv").read_text().splitlines())
    assert sorted(p.name for p in out.iterdir()) == ["sweep.csv", "sweep.json", "sweep.png", "sweep_run.json"]


def test_a_run_directory_that_is_a_file_is_refused_in_one_line(tmp_path, source):
    (tmp_path / "out").write_text("x")
    with pytest.raises(ValueError, match=f"cannot write a run directory at {tmp_path / 'out'}: .* is a file"):
        run_eval(source, organism_examples(2, "test"), "Q:{question}|A:", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match=f"cannot write a sweep directory at {tmp_path / 'out'}: .* is a file"):
        _sweep(source, tmp_path / "out")
