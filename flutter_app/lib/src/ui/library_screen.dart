import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:flutter/material.dart';

import '../exercise_info.dart';
import 'exercise_card.dart';

/// The exercises the model knows (model_meta.json's classes, in its order), each with the
/// muscles it trains and technique tips in the phone's language.
class LibraryScreen extends StatelessWidget {
  const LibraryScreen({super.key, required this.classes, required this.catalog});

  final List<String> classes;
  final ExerciseCatalog catalog;

  @override
  Widget build(BuildContext context) {
    final l10n = AppLocalizations.of(context);
    final language = Localizations.localeOf(context).languageCode;
    return Scaffold(
      appBar: AppBar(title: Text(l10n.knownExercises)),
      body: ListView(
        padding: const EdgeInsets.all(16),
        children: [
          Text(l10n.libraryIntro(classes.length)),
          const SizedBox(height: 8),
          for (final label in classes)
            ExpansionTile(
              title: Text(catalog.displayName(label, language)),
              children: [
                if (catalog.lookup(label, language) case final info?)
                  ExerciseDetails(info: info),
              ],
            ),
        ],
      ),
    );
  }
}
