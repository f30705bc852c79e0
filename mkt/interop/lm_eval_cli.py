"""``python -m mkt.interop.lm_eval_cli ARGS``: lm-eval's own command line with the ``mkt`` model registered."""

from lm_eval.__main__ import cli_evaluate

import mkt.interop.lm_eval_model  # noqa: F401  (registers --model mkt)

if __name__ == "__main__":
    cli_evaluate()
