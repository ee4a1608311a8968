/// Exercise guidance shown with a result: names, muscles and tips per class and language,
/// from `assets/exercises.json` (keyed by the model's class names; tests/test_app_contract.py
/// checks the keys against the training config).
library;

import 'dart:convert';

import 'package:flutter/services.dart';

const String exercisesAsset = 'assets/exercises.json';

/// Guidance is written in English and Dutch; other languages get English.
const String fallbackLanguage = 'en';

class ExerciseInfo {
  const ExerciseInfo({required this.name, required this.muscles, required this.tips});

  final String name;
  final List<String> muscles;
  final List<String> tips;
}

/// exercises.json is malformed; [message] names the file and the entry.
class ExerciseCatalogException implements Exception {
  const ExerciseCatalogException(this.message);

  final String message;

  @override
  String toString() => message;
}

class ExerciseCatalog {
  const ExerciseCatalog(this._entries);

  /// Parses exercises.json: `{class: {language: {name, muscles: [...], tips: [...]}}}`.
  factory ExerciseCatalog.parse(String text, {required String source}) {
    final Object? json;
    try {
      json = jsonDecode(text);
    } on FormatException catch (e) {
      throw ExerciseCatalogException('$source: not valid JSON (${e.message})');
    }
    if (json is! Map<String, dynamic>) {
      throw ExerciseCatalogException('$source: expected an object keyed by class name');
    }
    final entries = <String, Map<String, ExerciseInfo>>{};
    for (final MapEntry(key: label, value: languages) in json.entries) {
      if (languages is! Map<String, dynamic>) {
        throw ExerciseCatalogException('$source: $label: expected an object keyed by language');
      }
      entries[label] = {
        for (final MapEntry(key: language, value: info) in languages.entries)
          language: _info(info, '$source: $label.$language'),
      };
    }
    return ExerciseCatalog(entries);
  }

  static Future<ExerciseCatalog> load(AssetBundle bundle) async =>
      ExerciseCatalog.parse(await bundle.loadString(exercisesAsset), source: exercisesAsset);

  final Map<String, Map<String, ExerciseInfo>> _entries;

  /// Guidance for [label] in [languageCode], else in English, else null.
  ExerciseInfo? lookup(String label, String languageCode) {
    final byLanguage = _entries[label];
    return byLanguage?[languageCode] ?? byLanguage?[fallbackLanguage];
  }

  /// The exercise's name in [languageCode], or the class name if there is no guidance.
  String displayName(String label, String languageCode) =>
      lookup(label, languageCode)?.name ?? label;
}

ExerciseInfo _info(Object? json, String where) {
  List<String> strings(Object? value, String field) {
    if (value is! List || value.isEmpty || value.any((v) => v is! String || v.isEmpty)) {
      throw ExerciseCatalogException('$where.$field: expected a non-empty list of strings');
    }
    return List.unmodifiable(value.cast<String>());
  }

  if (json is! Map<String, dynamic> || json['name'] is! String) {
    throw ExerciseCatalogException('$where: expected {"name", "muscles", "tips"}');
  }
  return ExerciseInfo(
    name: json['name'] as String,
    muscles: strings(json['muscles'], 'muscles'),
    tips: strings(json['tips'], 'tips'),
  );
}
