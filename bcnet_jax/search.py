"""`python -m bcnet_jax.search --workdir=DIR [--config.search...]`: searches
the supernet trained in DIR (with DIR/config.json); rerun to resume. The
program: bcnet_jax/searching/search.py."""

from __future__ import annotations

from bcnet_jax.run import app
from bcnet_jax.searching import search


def main(argv: list[str]) -> None:
  del argv  # app.run allows none
  app.print_result(search.run(app.config(), app.workdir(),
                              overridden=app.overrides()))


if __name__ == '__main__':
  app.run(main)
