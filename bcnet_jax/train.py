"""`python -m bcnet_jax.train --config=... --workdir=...`: trains the stage
of the config (a supernet, or `--config.stage=retrain` a searched arch);
rerun to resume. The program: bcnet_jax/training.py."""

from __future__ import annotations

from bcnet_jax import training
from bcnet_jax.run import app


def main(argv: list[str]) -> None:
  del argv  # app.run allows none
  app.print_result(training.train_and_evaluate(
      app.config(), app.workdir(), command=app.command_line()))


if __name__ == '__main__':
  app.run(main)
