"""What an analysis is, to the command line: typed options in, a result out, a plot beside it.

Every analysis module defines

- an options dataclass (``analyses._common.RunOptions`` and its kin hold the shared
  model, key and prompt options), whose fields are the ``dest`` names of its arguments;
- ``run(options) -> result``: the experiment, which writes ``<out>/<name>.json`` and
  ``<name>.png`` (its plot) and prints a report beside every control;
- ``add_arguments(parser)``: its command line (the defaults live there, once);

and registers them as one ``Analysis`` in ``analyses.registry.ANALYSES``, which ``mkt analyze``
dispatches through. Below the command line nothing sees an argparse ``Namespace``.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

Options = TypeVar("Options")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Analysis(Generic[Options, Result]):
    """One analysis: its name, its description (the module docstring), its arguments, options and run."""

    name: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    options: type[Options]
    run: Callable[[Options], Result]

    @property
    def summary(self) -> str:
        """The description's first line (``mkt analyze --help``)."""
        return self.description.strip().splitlines()[0]

    def parser(self, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
        """``parser`` (a new one by default) with this analysis's arguments added."""
        parser = parser or argparse.ArgumentParser(prog=f"python -m analyses.{self.name}", description=self.description,
                                                   formatter_class=argparse.RawDescriptionHelpFormatter)
        self.add_arguments(parser)
        return parser

    def options_from(self, args: argparse.Namespace) -> Options:
        """The typed options of parsed arguments (the one place a ``Namespace`` turns into options)."""
        return self.options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(self.options)})

    def main(self, argv: list[str] | None = None) -> Result:
        """``python -m analyses.NAME ...``: parse ``argv`` and run."""
        return self.run(self.options_from(self.parser().parse_args(argv)))
