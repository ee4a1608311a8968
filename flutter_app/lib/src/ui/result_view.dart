/// The result of one photo: the photo, one of the three answers, the best-scoring known
/// exercises, guidance in the phone's language, and "another photo".
library;

import 'dart:io';

import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:flutter/foundation.dart' show kDebugMode;
import 'package:flutter/material.dart';
import 'package:intl/intl.dart';

import '../classifier.dart';
import '../decision.dart';
import '../exercise_info.dart';
import 'exercise_card.dart';

/// Height of the photo preview, logical pixels.
const double previewHeight = 240;

class ResultScreen extends StatelessWidget {
  const ResultScreen({
    super.key,
    required this.prediction,
    required this.threshold,
    required this.catalog,
    this.photoPath,
  });

  final Prediction prediction;
  final double threshold;
  final ExerciseCatalog catalog;
  final String? photoPath;

  @override
  Widget build(BuildContext context) {
    return Scaffold(
      appBar: AppBar(title: Text(AppLocalizations.of(context).resultTitle)),
      body: ResultView(
        prediction: prediction,
        threshold: threshold,
        catalog: catalog,
        photoPath: photoPath,
        onAnotherPhoto: () => Navigator.of(context).maybePop(),
      ),
    );
  }
}

class ResultView extends StatelessWidget {
  const ResultView({
    super.key,
    required this.prediction,
    required this.threshold,
    required this.catalog,
    required this.onAnotherPhoto,
    this.photoPath,
  });

  final Prediction prediction;

  /// From model_meta.json: below it the app does not name an exercise.
  final double threshold;
  final ExerciseCatalog catalog;
  final VoidCallback onAnotherPhoto;
  final String? photoPath;

  @override
  Widget build(BuildContext context) {
    final l10n = AppLocalizations.of(context);
    final language = Localizations.localeOf(context).languageCode;
    final decision = prediction.decision;
    String nameOf(String label) => catalog.displayName(label, language);
    final info = decision.answer == Answer.exercise
        ? catalog.lookup(decision.top.label, language)
        : null;
    return SingleChildScrollView(
      padding: const EdgeInsets.all(16),
      child: Column(
        crossAxisAlignment: CrossAxisAlignment.stretch,
        children: [
          if (photoPath case final path?) _Photo(path: path),
          Semantics(
            liveRegion: true,
            child: switch (decision.answer) {
              Answer.exercise => _Exercise(
                name: nameOf(decision.top.label),
                probability: decision.top.probability,
              ),
              Answer.notSure => _Notice(
                title: l10n.notSure,
                text: l10n.notSureHint(formatPercent(context, threshold)),
              ),
              Answer.unknown => _Notice(title: l10n.unknownTitle, text: l10n.unknownHint),
            },
          ),
          if (decision.answer != Answer.unknown)
            _BestKnown(
              title: decision.answer == Answer.exercise ? l10n.topThree : l10n.bestGuesses,
              scores: decision.bestKnown,
              nameOf: nameOf,
            ),
          if (info != null) Card(child: ExerciseDetails(info: info)),
          const SizedBox(height: 8),
          FilledButton.icon(
            onPressed: onAnotherPhoto,
            icon: const Icon(Icons.add_a_photo),
            label: Text(l10n.anotherPhoto),
          ),
          // Timing is for developers: never in a release build.
          if (kDebugMode)
            Padding(
              padding: const EdgeInsets.only(top: 12),
              child: Text(
                l10n.debugTiming(prediction.inferenceMs, prediction.preprocessMs),
                style: Theme.of(context).textTheme.bodySmall,
                textAlign: TextAlign.center,
              ),
            ),
        ],
      ),
    );
  }
}

String formatPercent(BuildContext context, double value) =>
    NumberFormat.percentPattern(AppLocalizations.of(context).localeName).format(value);

class _Photo extends StatelessWidget {
  const _Photo({required this.path});

  final String path;

  @override
  Widget build(BuildContext context) {
    // Decoded at the size it is shown, not at the camera's 12-50 MP.
    final pixels = (previewHeight * MediaQuery.devicePixelRatioOf(context)).round();
    return Padding(
      padding: const EdgeInsets.only(bottom: 16),
      child: Semantics(
        image: true,
        label: AppLocalizations.of(context).photoLabel,
        child: ClipRRect(
          borderRadius: BorderRadius.circular(12),
          child: Image.file(
            File(path),
            height: previewHeight,
            cacheHeight: pixels,
            fit: BoxFit.contain,
            excludeFromSemantics: true,
          ),
        ),
      ),
    );
  }
}

class _Exercise extends StatelessWidget {
  const _Exercise({required this.name, required this.probability});

  final String name;
  final double probability;

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    return Card(
      child: Padding(
        padding: const EdgeInsets.all(16),
        child: Column(
          crossAxisAlignment: CrossAxisAlignment.start,
          children: [
            Semantics(header: true, child: Text(name, style: theme.textTheme.headlineSmall)),
            const SizedBox(height: 12),
            ExcludeSemantics(child: LinearProgressIndicator(value: probability, minHeight: 8)),
            const SizedBox(height: 8),
            Text(AppLocalizations.of(context).confidence(formatPercent(context, probability))),
          ],
        ),
      ),
    );
  }
}

class _Notice extends StatelessWidget {
  const _Notice({required this.title, required this.text});

  final String title;
  final String text;

  @override
  Widget build(BuildContext context) {
    final theme = Theme.of(context);
    return Card(
      color: theme.colorScheme.secondaryContainer,
      child: Padding(
        padding: const EdgeInsets.all(16),
        child: Column(
          crossAxisAlignment: CrossAxisAlignment.start,
          children: [
            Semantics(header: true, child: Text(title, style: theme.textTheme.titleLarge)),
            const SizedBox(height: 8),
            Text(text),
          ],
        ),
      ),
    );
  }
}

class _BestKnown extends StatelessWidget {
  const _BestKnown({required this.title, required this.scores, required this.nameOf});

  final String title;
  final List<ClassScore> scores;
  final String Function(String label) nameOf;

  @override
  Widget build(BuildContext context) {
    return Card(
      child: Padding(
        padding: const EdgeInsets.symmetric(vertical: 8),
        child: Column(
          crossAxisAlignment: CrossAxisAlignment.start,
          children: [
            Padding(
              padding: const EdgeInsets.symmetric(horizontal: 16, vertical: 8),
              child: Semantics(
                header: true,
                child: Text(title, style: Theme.of(context).textTheme.titleMedium),
              ),
            ),
            for (final score in scores)
              ListTile(
                dense: true,
                title: Text(nameOf(score.label)),
                subtitle: ExcludeSemantics(
                  child: LinearProgressIndicator(value: score.probability),
                ),
                trailing: Text(formatPercent(context, score.probability)),
              ),
          ],
        ),
      ),
    );
  }
}
