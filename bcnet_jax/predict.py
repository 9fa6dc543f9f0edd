"""`python -m bcnet_jax.predict --workdir=DIR cat.jpg ship.png [--json]`:
the top-5 classes of each image by a retrained network. The program:
bcnet_jax/retrain/predict.py."""

from __future__ import annotations

import json
import sys

from absl import flags

from bcnet_jax.retrain import predict
from bcnet_jax.run import app
from bcnet_jax.run import console


def main(argv: list[str], as_json: flags.FlagHolder) -> None:
  """Prints the top 5 of each image named after the flags; each unreadable
  one on stderr, and then exits with status 2."""
  results = predict.predict(app.workdir(), argv[1:])
  for result in results:
    if 'error' in result:
      print(f'error: {result["error"]}', file=sys.stderr, flush=True)
    elif as_json.value:
      print(json.dumps(result), flush=True)
    else:
      print(result['file'] + ': ' + ', '.join(
          f'{name} {p:.1%}' for name, p in result['top5']), flush=True)
  failed = sum('error' in r for r in results)
  if failed:
    app.fail(f'{failed} of {console.plural(len(results), "file")} could '
             'not be read')


if __name__ == '__main__':
  _JSON = flags.DEFINE_bool('json', False, 'one JSON object per image')
  app.run(lambda argv: main(argv, _JSON), required=('workdir',),
          positional='image files', reads_config=False)
