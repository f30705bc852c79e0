"""The real-model study of issue 19 (in progress): how well cross-family maps generalise, and the
step-by-step transfer between trained families. Model I/O and file handling; the math lives in
``mkt.alignment``."""
