"""Keys that travel: mkt packs to and from the formats other tools read.

``control_vector`` writes and reads llama.cpp / repeng GGUF control vectors (the rules llama.cpp
applies to them live in ``llamacpp_rules``), ``llamacpp_run`` runs llama.cpp itself with one,
``lm_eval_steered`` writes lm-evaluation-harness's ``steered`` files and ``lm_eval_model``
registers mkt as an lm-eval model (needs ``mkt[lm-eval]``; ``lm_eval_cli`` is lm-eval's command
line with it registered). A pack's README (``mkt.pack_card``)
says where it came from.
"""
