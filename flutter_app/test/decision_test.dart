// The decision rule (tests/test_app_contract.py runs its numpy twin against Python's decide).
import 'package:fitlens_app/src/decision.dart';
import 'package:flutter_test/flutter_test.dart';

void main() {
  const labels = ['a', 'b', 'c', 'd', 'none'];

  test('a known class at or above the threshold is named', () {
    final d = decide([0.1, 0.6, 0.1, 0.1, 0.1], labels, numKnown: 4, threshold: 0.6);
    expect(d.answer, Answer.exercise);
    expect(d.top.label, 'b');
    expect(d.bestKnown.map((s) => s.label), ['b', 'a', 'c']);
  });

  test('below the threshold: not sure, with the best known guesses', () {
    final d = decide([0.3, 0.1, 0.35, 0.05, 0.2], labels, numKnown: 4, threshold: 0.6);
    expect(d.answer, Answer.notSure);
    expect(d.bestKnown.map((s) => s.label), ['c', 'a', 'b']);
  });

  test('the reject output on top: not one I know, whatever the threshold', () {
    final d = decide([0.1, 0.1, 0.1, 0.1, 0.6], labels, numKnown: 4, threshold: 0.0);
    expect(d.answer, Answer.unknown);
    expect(d.top.label, 'none');
  });

  test('ties go to the lower index, as numpy.argmax', () {
    final d = decide([0.25, 0.25, 0.25, 0.0, 0.25], labels, numKnown: 4, threshold: 0.25);
    expect(d.answer, Answer.exercise);
    expect(d.top.index, 0);
    expect(d.bestKnown.map((s) => s.index), [0, 1, 2]);
  });

  test('an output count that does not fit the metadata is refused', () {
    expect(
      () => decide([0.5, 0.5], labels, numKnown: 4, threshold: 0.5),
      throwsA(isA<OutputMismatchException>()),
    );
  });
}
