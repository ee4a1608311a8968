// Fakes for the widget tests: the exporter-written sample metadata, the real exercises.json, a
// classifier that answers what a test tells it and a photo source without image_picker.
import 'dart:io';

import 'package:fitlens_app/src/app_services.dart';
import 'package:fitlens_app/src/classifier.dart';
import 'package:fitlens_app/src/decision.dart';
import 'package:fitlens_app/src/exercise_info.dart';
import 'package:fitlens_app/src/model_meta.dart';
import 'package:fitlens_app/src/photo_source.dart';

import 'fixture_support.dart';

final ModelMeta sampleMeta = ModelMeta.fromJson(
  readJson('$fixturesDir/model_meta.sample.json'),
  source: 'sample',
);

final ExerciseCatalog catalog = ExerciseCatalog.parse(
  File(exercisesAsset).readAsStringSync(),
  source: exercisesAsset,
);

/// A prediction whose arg-max output is [top] (a class or the reject class) at [probability].
Prediction predictionFor(String top, double probability) {
  final labels = sampleMeta.outputLabels;
  final rest = (1 - probability) / (labels.length - 1);
  return Prediction(
    decision: decide(
      [for (final label in labels) label == top ? probability : rest],
      labels,
      numKnown: sampleMeta.classes.length,
      threshold: sampleMeta.threshold,
    ),
    preprocessMs: 120,
    inferenceMs: 35,
  );
}

class FakeClassifier implements ExerciseClassifier {
  FakeClassifier(this.answer);

  /// Returns a prediction or throws the exception it is given.
  Object answer;
  final List<String> classified = [];
  bool closed = false;

  @override
  Future<Prediction> classify(String path) async {
    classified.add(path);
    return switch (answer) {
      final Prediction p => p,
      final Exception e => throw e,
      _ => throw StateError('FakeClassifier.answer: $answer'),
    };
  }

  @override
  Future<void> close() async => closed = true;
}

class FakePhotos implements PhotoSource {
  FakePhotos({this.picked, this.lost});

  String? picked;
  String? lost;
  final List<PhotoOrigin> asked = [];

  @override
  Future<String?> pick(PhotoOrigin origin) async {
    asked.add(origin);
    return picked;
  }

  @override
  Future<String?> recoverLost() async => lost;
}

AppServices fakeServices(FakeClassifier classifier) =>
    AppServices(meta: sampleMeta, classifier: classifier, catalog: catalog);
