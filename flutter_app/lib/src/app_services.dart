/// Everything the screens need, loaded once at start-up.
library;

import 'dart:io';

import 'package:flutter/foundation.dart' show FlutterError;
import 'package:flutter/services.dart';
import 'package:path_provider/path_provider.dart';

import 'classifier.dart';
import 'exercise_info.dart';
import 'model_meta.dart';
import 'model_store.dart';

class AppServices {
  const AppServices({required this.meta, required this.classifier, required this.catalog});

  /// Reads and validates model_meta.json, copies out the model it names and checks its SHA-256
  /// ([installModel]), opens it and reads the exercise guidance. Throws
  /// [ModelMetaException] or [ModelIntegrityException] when the export is missing, damaged or
  /// does not fit this app, [ClassifierException] when ONNX Runtime rejects the model.
  static Future<AppServices> load(AssetBundle bundle) async {
    final String text;
    try {
      text = await bundle.loadString(modelMetaAsset, cache: false);
    } on FlutterError {
      throw const ModelMetaException(
        '$modelMetaAsset: not in the app bundle; run `python scripts/export.py` (it writes the '
        'model and model_meta.json into flutter_app/assets/models/), then rebuild the app',
      );
    }
    final meta = ModelMeta.parse(text, source: modelMetaAsset);
    final catalog = await ExerciseCatalog.load(bundle);
    final folder = await getApplicationSupportDirectory();
    final modelPath = await installModel(bundle, meta, Directory('${folder.path}/models'));
    final classifier = await OnnxClassifier.open(meta, modelPath);
    return AppServices(meta: meta, classifier: classifier, catalog: catalog);
  }

  final ModelMeta meta;
  final ExerciseClassifier classifier;
  final ExerciseCatalog catalog;

  Future<void> dispose() => classifier.close();
}
