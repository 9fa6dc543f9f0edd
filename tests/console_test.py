"""What a run prints: plurals, durations, and the scoring estimate that
says how long the rest will take."""

from unittest import mock

from absl.testing import absltest

from bcnet_jax.run import console


class ConsoleTest(absltest.TestCase):

  def test_plurals_and_durations(self):
    self.assertEqual(console.plural(1, 'batch'), '1 batch')
    self.assertEqual(console.plural(3, 'batch'), '3 batches')
    self.assertEqual(console.plural(1, 'generation'), '1 generation')
    self.assertEqual(console.plural(0.042, 'epoch', 'epochs'), '0.042 epochs')
    self.assertEqual(console.duration(0.2), '1 s')
    self.assertEqual(console.duration(600), '10 min')
    self.assertEqual(console.duration(4 * 3600), '4.0 h')

  def test_scoring_estimates_after_the_first_and_third_progress(self):
    clock = iter([0.0, 100.0, 110.0, 120.0, 130.0, 140.0])
    with mock.patch.object(console.time, 'perf_counter',
                           lambda: next(clock)), \
        mock.patch.object(console, 'say') as say:
      progress = console.ScoringProgress(10, 'Lower X.', bar=False)
      # Two calls of the evaluator of 5 width vectors each, reporting
      # within each call; every report after the first takes 10 s per
      # width vector.
      for done in (0, 1, 2, 3, 5, 5, 0, 1):
        progress(done, 5)
    said = [c.args[0] for c in say.call_args_list]
    self.assertEqual(said, [
        # 1 of 10 after 100 s, compiling included: 900 s for 9 at most.
        'Scoring 10 width vectors: 10% done in 2 min; at most about 15 min '
        'for the rest (compiling included). Lower X.',
        # 3 of 10 after 120 s; 10 s each since the second: 70 s for 7.
        'Scoring 10 width vectors: 30% done in 2 min; about 70 s for the '
        'rest. Lower X.'])
    # The second call counts on from the first's 5.
    self.assertEqual(progress._base + progress._last, 6)


if __name__ == '__main__':
  absltest.main()
