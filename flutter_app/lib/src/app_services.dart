/// Everything the screens need, loaded once at start-up from the app bundle.
library;

// FlutterError, which a missing asset throws, is declared in foundation (services.dart does not
// re-export it); foundation also re-exports dart:typed_data's Uint8List.
import 'package:flutter/foundation.dart' show FlutterError, Uint8List;
import 'package:flutter/services.dart';

import 'classifier.dart';
import 'exercise_info.dart';
import 'model_meta.dart';

class AppServices {
  const AppServices({required this.meta, required this.classifier, required this.catalog});

  /// Reads and validates model_meta.json, loads the model it names into a [Classifier] and
  /// reads the exercise guidance. Throws [ModelMetaException] when the export is missing or
  /// does not fit this app, [ClassifierException] when ONNX Runtime rejects the model.
  static Future<AppServices> load(AssetBundle bundle) async {
    final meta = ModelMeta.parse(
      await _loadString(bundle, modelMetaAsset),
      source: modelMetaAsset,
    );
    final catalog = await ExerciseCatalog.load(bundle);
    final modelBytes = await _loadBytes(bundle, meta.modelAsset);
    final classifier = await Classifier.start(meta, modelBytes);
    return AppServices(meta: meta, classifier: classifier, catalog: catalog);
  }

  final ModelMeta meta;
  final Classifier classifier;
  final ExerciseCatalog catalog;

  void dispose() => classifier.dispose();
}

Future<String> _loadString(AssetBundle bundle, String asset) async {
  try {
    return await bundle.loadString(asset, cache: false);
  } on FlutterError {
    throw ModelMetaException(_notBundled(asset));
  }
}

Future<Uint8List> _loadBytes(AssetBundle bundle, String asset) async {
  try {
    final data = await bundle.load(asset);
    return data.buffer.asUint8List(data.offsetInBytes, data.lengthInBytes);
  } on FlutterError {
    throw ModelMetaException(_notBundled(asset));
  }
}

String _notBundled(String asset) =>
    '$asset: not in the app bundle; run `python scripts/export.py` (it writes the model and '
    'model_meta.json into flutter_app/assets/models/), then rebuild the app';
