// The result view's three answers, with the exporter-written sample metadata (a pose model with
// a reject class) and the real guidance.
import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:fitlens_app/src/classifier.dart';
import 'package:fitlens_app/src/ui/exercise_card.dart';
import 'package:fitlens_app/src/ui/result_view.dart';
import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';

import 'fakes.dart';

void main() {
  final english = lookupAppLocalizations(const Locale('en'));
  var anotherPhoto = 0;

  Future<void> show(WidgetTester tester, Prediction prediction, {Locale locale = const Locale('en')}) =>
      tester.pumpWidget(
        MaterialApp(
          locale: locale,
          localizationsDelegates: AppLocalizations.localizationsDelegates,
          supportedLocales: AppLocalizations.supportedLocales,
          home: Scaffold(
            body: ResultView(
              prediction: prediction,
              threshold: sampleMeta.threshold,
              catalog: catalog,
              onAnotherPhoto: () => anotherPhoto++,
            ),
          ),
        ),
      );

  testWidgets('a confident prediction names the exercise, its confidence and guidance', (
    tester,
  ) async {
    final label = sampleMeta.classes.last;
    final info = catalog.lookup(label, 'en')!;
    await show(tester, predictionFor(label, 0.92));
    await tester.pumpAndSettle();

    expect(find.text(info.name), findsWidgets);
    expect(find.text(english.confidence('92%')), findsOneWidget);
    expect(find.text(english.notSure), findsNothing);
    expect(find.text(info.tips.first), findsOneWidget);
    // Tests run in debug mode: the timing line is there (release builds leave it out).
    expect(find.text(english.debugTiming(35, 120)), findsOneWidget);
    await tester.tap(find.text(english.anotherPhoto));
    expect(anotherPhoto, 1);
  });

  testWidgets('below the threshold it says "not sure" and lists best guesses, no guidance', (
    tester,
  ) async {
    final label = sampleMeta.classes.first;
    final info = catalog.lookup(label, 'en')!;
    await show(tester, predictionFor(label, sampleMeta.threshold - 0.2));
    await tester.pumpAndSettle();

    expect(find.text(english.notSure), findsOneWidget);
    expect(find.text(english.bestGuesses), findsOneWidget);
    expect(find.byType(ExerciseDetails), findsNothing);
    expect(find.text(info.name), findsOneWidget); // listed as a guess
  });

  testWidgets('the reject output on top: "not one of the exercises I know", in Dutch too', (
    tester,
  ) async {
    final dutch = lookupAppLocalizations(const Locale('nl'));
    await show(tester, predictionFor(sampleMeta.rejectClass!, 0.7), locale: const Locale('nl'));
    await tester.pumpAndSettle();

    expect(find.text(dutch.unknownTitle), findsOneWidget);
    expect(find.text(dutch.bestGuesses), findsNothing);
    expect(find.byType(ExerciseDetails), findsNothing);
  });
}
