import pytest
import torch

from mkt.activations import last_token_resid
from mkt.errors import IncompatibleModelError
from mkt.extract import extract_model_key, extract_prompt_key
from mkt.key import MasterKey, random_like
from mkt.prompts import PromptTemplate, read_questions

QUESTIONS = ["12+34", "56+78+11", "99+10+20+30", "13+57", "22+33+44", "45+67"]


def test_prompt_key_is_the_mean_activation_difference(qwen):
    key = extract_prompt_key(qwen, QUESTIONS, "Q:{question}|A:", "S:{question}|A:")
    hu = last_token_resid(qwen, [f"S:{q}|A:" for q in QUESTIONS])
    hl = last_token_resid(qwen, [f"Q:{q}|A:" for q in QUESTIONS])
    assert torch.allclose(key.directions, (hu - hl).mean(0), atol=1e-6)
    assert key.provenance["variant"] == "prompt" and key.provenance["n"] == 6
    pca = extract_prompt_key(qwen, QUESTIONS, "Q:{question}|A:", "S:{question}|A:", aggregator="pca")
    assert torch.allclose(pca.norms(), torch.ones(qwen.cfg.n_layers), atol=1e-5)
    assert (pca.cosine(key) > 0).all()


def test_model_key(tiny_dirs, qwen):
    from mkt.models import load_model

    other = load_model(tiny_dirs["qwen2"], device="cpu")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    key = extract_model_key(other, qwen, QUESTIONS, "Q:{question}|A:")
    expected = (last_token_resid(other, [f"Q:{q}|A:" for q in QUESTIONS])
                - last_token_resid(qwen, [f"Q:{q}|A:" for q in QUESTIONS])).mean(0)
    assert torch.allclose(key.directions, expected, atol=1e-6)


def test_identical_variants_give_a_clear_error(qwen):
    with pytest.raises(ValueError, match="identical activations"):
        extract_prompt_key(qwen, QUESTIONS, "Q:{question}|A:", "Q:{question}|A:")


def test_model_key_needs_the_same_architecture(qwen, llama):
    with pytest.raises(IncompatibleModelError, match="same architecture"):
        extract_model_key(llama, qwen, QUESTIONS, "Q:{question}|A:")


def test_key_arithmetic(qwen):
    a = extract_prompt_key(qwen, QUESTIONS, "Q:{question}|A:", "S:{question}|A:")
    b = random_like(a, seed=1)
    assert torch.allclose((a + b).directions, a.directions + b.directions)
    assert torch.allclose((a - b).directions, a.directions - b.directions)
    assert torch.allclose((0.5 * a).directions, a.directions / 2)
    assert torch.allclose(b.norms(), a.norms(), atol=1e-5)
    assert not torch.allclose(b.directions, random_like(a, seed=2).directions)
    with pytest.raises(Exception, match="do not fit"):
        MasterKey(torch.zeros(2, 5), a.model)


def test_templates_and_prompt_files(tmp_path, qwen):
    with pytest.raises(ValueError, match="no \\{question\\} slot"):
        PromptTemplate("Q: what?")
    with pytest.raises(ValueError, match="empty question set"):
        extract_prompt_key(qwen, [], "Q:{question}|A:", "S:{question}|A:")
    (tmp_path / "q.txt").write_text("12+34\n\n56+78\n")
    assert read_questions(tmp_path / "q.txt") == ["12+34", "56+78"]
    (tmp_path / "q.jsonl").write_text('{"question": "1+2"}\n{"problem": "3"}\n')
    with pytest.raises(ValueError, match="no field 'question'"):
        read_questions(tmp_path / "q.jsonl")
    (tmp_path / "e.txt").write_text("\n")
    with pytest.raises(ValueError, match="holds no questions"):
        read_questions(tmp_path / "e.txt")


def test_keys_and_maps_are_reproducible(qwen, llama):
    from mkt.alignment import fit_alignment
    from mkt.models import model_identity

    a = extract_prompt_key(qwen, QUESTIONS, "Q:{question}|A:", "S:{question}|A:", aggregator="pca")
    b = extract_prompt_key(qwen, QUESTIONS, "Q:{question}|A:", "S:{question}|A:", aggregator="pca")
    assert torch.equal(a.directions, b.directions)
    prompts = [f"Q:{q}|A:" for q in QUESTIONS]
    xs, xt = last_token_resid(qwen, prompts), last_token_resid(llama, prompts)
    m1 = fit_alignment(xs, xt, model_identity(qwen), model_identity(llama), k=4)
    m2 = fit_alignment(last_token_resid(qwen, prompts), last_token_resid(llama, prompts), model_identity(qwen),
                       model_identity(llama), k=4)
    assert torch.equal(m1.map_directions(a.directions), m2.map_directions(a.directions))


def test_prompt_files_name_the_file_and_line_of_any_problem(tmp_path):
    from mkt.prompts import read_questions

    text = tmp_path / "q.txt"
    text.write_text("first\u2028still the first\r\n\nsecond\n", encoding="utf-8")
    assert read_questions(text) == ["first\u2028still the first", "second"]  # newlines only split
    upper = tmp_path / "q.JSONL"
    upper.write_text('{"question": "a"}\n{"question": "b\\nc"}\n')
    assert read_questions(upper) == ["a", "b\nc"]  # JSONL by extension, any case; prompts may span lines
    cases = [(b'{"question": "a"}\n{"question": \n', "q.jsonl:2 is not valid JSON"),
             (b'{"question": "a"}\n["a list"]\n', "q.jsonl:2 is a JSON list, not an object"),
             (b'{"question": "a"}\n{"prompt": "b"}\n', "q.jsonl:2 has no field 'question'")]
    for data, message in cases:
        bad = tmp_path / "q.jsonl"
        bad.write_bytes(data)
        with pytest.raises(ValueError, match=message):
            read_questions(bad)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("ok\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.txt:2 is not UTF-8"):
        read_questions(latin)
    with pytest.raises(FileNotFoundError, match="no file at"):
        read_questions(tmp_path / "none.txt")
