/// What the app says about a photo: the decision rule of model_meta.json
/// (`fitlens.contract.decide`; `tests/test_app_contract.py` runs a numpy twin of [decide]
/// against it on many probability vectors, ties and reject classes included).
library;

/// The three answers.
enum Answer {
  /// A known exercise, probable enough to be named.
  exercise,

  /// A known exercise is the most probable output, but below the threshold.
  notSure,

  /// The reject output is the most probable: none of the exercises the model knows.
  unknown,
}

class ClassScore {
  const ClassScore({required this.index, required this.label, required this.probability});

  final int index;

  /// The class name from the metadata (the key into exercises.json).
  final String label;
  final double probability;
}

class Decision {
  const Decision({required this.answer, required this.top, required this.bestKnown});

  final Answer answer;

  /// The arg-max output over all outputs (the reject output when [answer] is unknown).
  final ClassScore top;

  /// The [guesses] most probable known classes, best first: the exercise and its runners-up,
  /// or the best guesses when the app is not sure.
  final List<ClassScore> bestKnown;
}

/// How many known classes a [Decision] lists.
const int guesses = 3;

/// Thrown when the model's output does not fit its metadata.
class OutputMismatchException implements Exception {
  const OutputMismatchException(this.message);

  final String message;

  @override
  String toString() => message;
}

/// The rule: the first arg-max over all outputs; the reject output means [Answer.unknown];
/// else a probability >= [threshold] names the exercise, anything less is [Answer.notSure].
/// [labels] are the known classes then, if the model has one, the reject class.
Decision decide(List<double> probabilities, List<String> labels, {
  required int numKnown,
  required double threshold,
}) {
  if (probabilities.length != labels.length || numKnown > labels.length || numKnown < 1) {
    throw OutputMismatchException(
      'the model returned ${probabilities.length} probabilities; model_meta.json describes '
      '${labels.length} outputs ($numKnown known classes): it belongs to another model',
    );
  }
  var top = 0;
  for (var i = 1; i < probabilities.length; i++) {
    // Strictly greater: ties go to the lower index, as numpy.argmax does.
    if (probabilities[i] > probabilities[top]) {
      top = i;
    }
  }
  final answer = top >= numKnown
      ? Answer.unknown
      : probabilities[top] >= threshold
      ? Answer.exercise
      : Answer.notSure;
  // List.sort is not stable: break ties by index so equal scores keep the model's order.
  final known = List<int>.generate(numKnown, (i) => i)
    ..sort((a, b) {
      final byScore = probabilities[b].compareTo(probabilities[a]);
      return byScore != 0 ? byScore : a.compareTo(b);
    });
  ClassScore score(int i) =>
      ClassScore(index: i, label: labels[i], probability: probabilities[i]);
  return Decision(
    answer: answer,
    top: score(top),
    bestKnown: [for (final i in known.take(guesses)) score(i)],
  );
}
