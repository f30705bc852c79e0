"""The one interface mkt's evaluation code generates through, whichever engine runs.

An engine turns prompts (and an optional :class:`~mkt.steering.Steering`) into
:class:`~mkt.generation.Generation` objects with the same semantics everywhere: prompts
tokenized by mkt (:func:`mkt.models.encode`), stop on every EOS id of the model, stop
strings cut where they first begin, steering at ``blocks.{l}.hook_resid_post``. Activations
(key extraction, alignment) are not part of it: they stay on the TransformerLens bridge.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from mkt.generation import Generation, GenerationRequest
from mkt.models import ModelIdentity
from mkt.steering import Steering

ENGINES = ("transformer_lens", "vllm")


class Engine(ABC):
    """Generates, optionally steered. Subclasses set ``name``, ``tokenizer`` and ``identity``.

    Attributes:
        name: recorded in run fingerprints (results of two engines are never mixed in one run).
        tokenizer: the HF tokenizer prompts are built and encoded with.
        identity: the model's :class:`~mkt.models.ModelIdentity` (what keys are checked against).
    """

    name: str
    tokenizer: object
    identity: ModelIdentity

    def generate(self, prompts: list[str], max_new_tokens: int = 64, steering: Steering | None = None, **options
                 ) -> list[Generation]:
        """Continue each prompt (greedy by default): ``run(prompts, GenerationRequest(...))``.

        ``max_new_tokens``, ``steering`` and ``options`` are the fields of
        :class:`~mkt.generation.GenerationRequest`.
        """
        return self.run(prompts, GenerationRequest(max_new_tokens, steering, **options))

    @abstractmethod
    def run(self, prompts: list[str], request: GenerationRequest) -> list[Generation]:
        """Continue each prompt as ``request`` asks; one :class:`~mkt.generation.Generation` per prompt.

        ``request.seeds`` (one per prompt) make each prompt's samples independent of its batch. An
        engine that cannot honour a field (``logit_offset`` outside TransformerLens) raises.
        """

    @abstractmethod
    def weights_digest(self) -> str:
        """A short hash of a sample of the weights: a resumed run must use the same ones."""
