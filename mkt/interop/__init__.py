"""Keys that travel: mkt packs to and from the formats other tools read.

``control_vector`` writes and reads llama.cpp / repeng GGUF control vectors (the rules llama.cpp
applies to them live in ``llamacpp_rules``), ``lm_eval_steered`` writes lm-evaluation-harness's
``steered`` files, ``lm_eval_model`` registers mkt as an lm-eval model (needs ``mkt[lm-eval]``),
and ``pack_card`` writes the README.md that says where a pack came from.
"""
