import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:flutter/material.dart';

import '../exercise_info.dart';

/// Muscles and technique tips of one exercise (result screen and exercise library).
class ExerciseDetails extends StatelessWidget {
  const ExerciseDetails({super.key, required this.info});

  final ExerciseInfo info;

  @override
  Widget build(BuildContext context) {
    final l10n = AppLocalizations.of(context);
    final theme = Theme.of(context);
    return Padding(
      padding: const EdgeInsets.all(16),
      child: Column(
        crossAxisAlignment: CrossAxisAlignment.start,
        children: [
          Semantics(
            header: true,
            child: Text(l10n.musclesHeading, style: theme.textTheme.titleMedium),
          ),
          const SizedBox(height: 8),
          Wrap(
            spacing: 8,
            runSpacing: 4,
            children: [for (final muscle in info.muscles) Chip(label: Text(muscle))],
          ),
          const SizedBox(height: 16),
          Semantics(
            header: true,
            child: Text(l10n.tipsHeading, style: theme.textTheme.titleMedium),
          ),
          const SizedBox(height: 8),
          for (final tip in info.tips)
            Padding(
              padding: const EdgeInsets.only(bottom: 6),
              child: Row(
                crossAxisAlignment: CrossAxisAlignment.start,
                children: [
                  const ExcludeSemantics(child: Text('•  ')),
                  Expanded(child: Text(tip)),
                ],
              ),
            ),
        ],
      ),
    );
  }
}
