// The result view with real guidance (assets/exercises.json) and the exporter-written sample
// metadata: a confident prediction names the exercise, a weak one says "not sure".
import 'dart:io';

import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:fitlens_app/src/classifier.dart';
import 'package:fitlens_app/src/exercise_info.dart';
import 'package:fitlens_app/src/model_meta.dart';
import 'package:fitlens_app/src/ui/result_view.dart';
import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';

import 'fixture_support.dart';

void main() {
  final meta = ModelMeta.fromJson(readJson('$fixturesDir/model_meta.sample.json'), source: 'sample');
  final catalog = ExerciseCatalog.parse(
    File(exercisesAsset).readAsStringSync(),
    source: exercisesAsset,
  );
  final english = lookupAppLocalizations(const Locale('en'));

  /// One-hot-ish probabilities with [top] at [probability], the rest shared out.
  Prediction predict(String top, double probability) {
    final rest = (1 - probability) / (meta.classes.length - 1);
    return Prediction.fromProbabilities(
      [for (final label in meta.classes) label == top ? probability : rest],
      meta.classes,
      preprocessMs: 120,
      inferenceMs: 35,
    );
  }

  Future<void> show(WidgetTester tester, Prediction prediction) => tester.pumpWidget(
    MaterialApp(
      locale: const Locale('en'),
      localizationsDelegates: AppLocalizations.localizationsDelegates,
      supportedLocales: AppLocalizations.supportedLocales,
      home: Scaffold(
        body: ResultView(prediction: prediction, threshold: meta.threshold, catalog: catalog),
      ),
    ),
  );

  testWidgets('a confident prediction shows the exercise, its confidence and guidance', (
    tester,
  ) async {
    final label = meta.classes.last;
    final info = catalog.lookup(label, 'en')!;
    await show(tester, predict(label, 0.92));
    await tester.pumpAndSettle();

    expect(find.text(info.name), findsWidgets);
    expect(find.text(english.confidence('92%')), findsOneWidget);
    expect(find.text(english.notSure), findsNothing);
    expect(find.text(info.tips.first), findsOneWidget);
    expect(find.text(english.debugTiming(35, 120)), findsOneWidget);
  });

  testWidgets('below the metadata threshold it says "not sure" and names no exercise', (
    tester,
  ) async {
    final label = meta.classes.first;
    final info = catalog.lookup(label, 'en')!;
    await show(tester, predict(label, meta.threshold - 0.2));
    await tester.pumpAndSettle();

    expect(find.text(english.notSure), findsOneWidget);
    expect(find.byType(ExerciseInfoCard), findsNothing);
    expect(find.text(info.tips.first), findsNothing);
    // Still listed in the top 3, as a guess.
    expect(find.text(info.name), findsOneWidget);
  });
}
