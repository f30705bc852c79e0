"""organism:NAME is resolved in one place, to the directory the zoo ships; other names pass through."""

import pytest

from mkt.checkpoints import resolve_model_path
from mkt.errors import ModelLoadError
from mkt.organisms.zoo import ZOO, organism_path


def test_organism_names_resolve_to_the_shipped_directories_and_others_pass_through(tmp_path):
    for name in ZOO:
        assert resolve_model_path(f"organism:{name}") == str(organism_path(name))
        assert (organism_path(name) / "config.json").exists()
    assert resolve_model_path("Qwen/Qwen3-4B") == "Qwen/Qwen3-4B"
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_path(tmp_path) == str(tmp_path)  # an HF directory passes through
    with pytest.raises(ModelLoadError, match="unknown organism 'source-huge'; the zoo has \\['source-base'"):
        resolve_model_path("organism:source-huge")
