"""`python -m bcnet_jax.rank --workdir=DIR --archs=ARCHS.json
[--truth=TRUTH.json] [--out=SCORES.json] [--config.eval...]`: scores given
width vectors with the supernet in DIR (trained with DIR/config.json) and,
with a truth, how its ranking agrees. The program:
bcnet_jax/searching/ranking.py."""

from __future__ import annotations

from absl import flags

from bcnet_jax.run import app
from bcnet_jax.searching import ranking


def main(argv: list[str], archs: flags.FlagHolder, truth: flags.FlagHolder,
         out: flags.FlagHolder) -> None:
  del argv
  app.print_result(ranking.run(app.config(), app.workdir(), archs.value,
                               truth.value, out.value,
                               overridden=app.overrides()))


if __name__ == '__main__':
  # Defined only when run: importing this module defines no flag.
  _ARCHS = flags.DEFINE_string('archs', None, 'JSON file of width vectors')
  _TRUTH = flags.DEFINE_string('truth', None,
                               'JSON file {key: accuracy} to compare with')
  _OUT = flags.DEFINE_string('out', None, 'where to write {key: score}')
  app.run(lambda argv: main(argv, _ARCHS, _TRUTH, _OUT),
          required=('workdir', 'archs'))
