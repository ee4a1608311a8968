/// The result of one photo: the photo, the exercise (or "not sure"), the top 3, guidance in the
/// phone's language and a debug timing line.
library;

import 'dart:typed_data';

import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:flutter/material.dart';
import 'package:intl/intl.dart';

import '../classifier.dart';
import '../exercise_info.dart';

class ResultScreen extends StatelessWidget {
  const ResultScreen({
    super.key,
    required this.prediction,
    required this.threshold,
    required this.catalog,
    this.image,
  });

  final Prediction prediction;
  final double threshold;
  final ExerciseCatalog catalog;
  final Uint8List? image;

  @override
  Widget build(BuildContext context) {
    return Scaffold(
      appBar: AppBar(title: Text(AppLocalizations.of(context).resultTitle)),
      body: ResultView(
        prediction: prediction,
        threshold: threshold,
        catalog: catalog,
        image: image,
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
    this.image,
  });

  final Prediction prediction;

  /// From model_meta.json: below it the app does not name an exercise.
  final double threshold;
  final ExerciseCatalog catalog;
  final Uint8List? image;

  @override
  Widget build(BuildContext context) {
    final language = Localizations.localeOf(context).languageCode;
    final best = prediction.best;
    final confident = prediction.isConfident(threshold);
    final info = catalog.lookup(best.label, language);
    String nameOf(String label) => catalog.displayName(label, language);
    return SingleChildScrollView(
      padding: const EdgeInsets.all(16),
      child: Column(
        crossAxisAlignment: CrossAxisAlignment.stretch,
        children: [
          if (image case final bytes?) _Photo(bytes: bytes),
          if (confident)
            _TopExercise(name: nameOf(best.label), probability: best.probability)
          else
            _NotSure(
              bestGuess: nameOf(best.label),
              probability: best.probability,
              threshold: threshold,
            ),
          _TopPredictions(scores: prediction.top, nameOf: nameOf),
          if (confident && info != null) ExerciseInfoCard(info: info),
          _DebugLine(prediction: prediction),
        ],
      ),
    );
  }
}

String formatPercent(BuildContext context, double value) =>
    NumberFormat.percentPattern(AppLocalizations.of(context).localeName).format(value);

class _Photo extends StatelessWidget {
  const _Photo({required this.bytes});

  final Uint8List bytes;

  @override
  Widget build(BuildContext context) {
    return Padding(
      padding: const EdgeInsets.only(bottom: 16),
      child: ClipRRect(
        borderRadius: BorderRadius.circular(12),
        child: Image.memory(bytes, height: 240, fit: BoxFit.contain),
      ),
    );
  }
}

class _TopExercise extends StatelessWidget {
  const _TopExercise({required this.name, required this.probability});

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
            Text(name, style: theme.textTheme.headlineSmall),
            const SizedBox(height: 12),
            LinearProgressIndicator(value: probability, minHeight: 8),
            const SizedBox(height: 8),
            Text(AppLocalizations.of(context).confidence(formatPercent(context, probability))),
          ],
        ),
      ),
    );
  }
}

class _NotSure extends StatelessWidget {
  const _NotSure({required this.bestGuess, required this.probability, required this.threshold});

  final String bestGuess;
  final double probability;
  final double threshold;

  @override
  Widget build(BuildContext context) {
    final l10n = AppLocalizations.of(context);
    final theme = Theme.of(context);
    return Card(
      color: theme.colorScheme.secondaryContainer,
      child: Padding(
        padding: const EdgeInsets.all(16),
        child: Column(
          crossAxisAlignment: CrossAxisAlignment.start,
          children: [
            Text(l10n.notSure, style: theme.textTheme.titleLarge),
            const SizedBox(height: 8),
            Text(
              l10n.notSureHint(
                bestGuess,
                formatPercent(context, probability),
                formatPercent(context, threshold),
              ),
            ),
          ],
        ),
      ),
    );
  }
}

class _TopPredictions extends StatelessWidget {
  const _TopPredictions({required this.scores, required this.nameOf});

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
              child: Text(
                AppLocalizations.of(context).topThree,
                style: Theme.of(context).textTheme.titleMedium,
              ),
            ),
            for (final score in scores)
              ListTile(
                dense: true,
                title: Text(nameOf(score.label)),
                subtitle: LinearProgressIndicator(value: score.probability),
                trailing: Text(formatPercent(context, score.probability)),
              ),
          ],
        ),
      ),
    );
  }
}

/// Muscles and technique tips for the recognised exercise.
class ExerciseInfoCard extends StatelessWidget {
  const ExerciseInfoCard({super.key, required this.info});

  final ExerciseInfo info;

  @override
  Widget build(BuildContext context) {
    final l10n = AppLocalizations.of(context);
    final theme = Theme.of(context);
    return Card(
      child: Padding(
        padding: const EdgeInsets.all(16),
        child: Column(
          crossAxisAlignment: CrossAxisAlignment.start,
          children: [
            Text(l10n.musclesHeading, style: theme.textTheme.titleMedium),
            const SizedBox(height: 8),
            Wrap(
              spacing: 8,
              runSpacing: 4,
              children: [for (final muscle in info.muscles) Chip(label: Text(muscle))],
            ),
            const SizedBox(height: 16),
            Text(l10n.tipsHeading, style: theme.textTheme.titleMedium),
            const SizedBox(height: 8),
            for (final tip in info.tips)
              Padding(
                padding: const EdgeInsets.only(bottom: 6),
                child: Row(
                  crossAxisAlignment: CrossAxisAlignment.start,
                  children: [
                    const Text('•  '),
                    Expanded(child: Text(tip)),
                  ],
                ),
              ),
          ],
        ),
      ),
    );
  }
}

class _DebugLine extends StatelessWidget {
  const _DebugLine({required this.prediction});

  final Prediction prediction;

  @override
  Widget build(BuildContext context) {
    return Padding(
      padding: const EdgeInsets.only(top: 12),
      child: Text(
        AppLocalizations.of(context).debugTiming(prediction.inferenceMs, prediction.preprocessMs),
        style: Theme.of(context).textTheme.bodySmall,
        textAlign: TextAlign.center,
      ),
    );
  }
}
