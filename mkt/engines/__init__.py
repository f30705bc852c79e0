"""Generation engines behind one interface (:class:`Engine`): TransformerLens and vLLM.

    engine = as_engine(bridge)                                   # mkt's own loop on the bridge
    engine = VLLMEngine("Qwen/Qwen3-4B", dtype="bfloat16")      # vLLM (pip install mkt[vllm])
    engine.generate(prompts, 256, steering=key.steering(alpha))

Evaluation (``mkt.eval``), ``mkt.significance`` and the demo take either and never ask which.
"""

from mkt.engines.base import ENGINES, Engine
from mkt.engines.transformer_lens import as_engine

__all__ = ["ENGINES", "Engine", "as_engine", "VLLMEngine"]


def __getattr__(name: str):
    if name == "VLLMEngine":  # importing vLLM takes seconds: only when asked for
        from mkt.engines.vllm import VLLMEngine

        return VLLMEngine
    raise AttributeError(name)
