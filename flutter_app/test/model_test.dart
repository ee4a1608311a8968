// The exported model on the golden fixtures, through the app's own Classifier, against the
// probabilities Python's onnxruntime gave (assets/models/expected_probabilities.json, written
// by the export). Skipped when there is no exported model, or when this host has no ONNX
// Runtime library for the onnxruntime package to load (see README: "Model test").
import 'dart:io';

import 'package:fitlens_app/src/classifier.dart';
import 'package:fitlens_app/src/model_meta.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:onnxruntime/onnxruntime.dart';

import 'fixture_support.dart';

const String expectedFile = 'assets/models/expected_probabilities.json';

String? skipReason() {
  if (!File(expectedFile).existsSync()) {
    return '$expectedFile not found: export a model first (python scripts/export.py)';
  }
  try {
    OrtEnv.version;
  } on Object catch (e) {
    return 'ONNX Runtime cannot be loaded on this host ($e)';
  }
  return null;
}

void main() {
  final skip = skipReason();

  test('the exported model reproduces Python onnxruntime on every fixture', () async {
    final expected = readJson(expectedFile);
    final meta = ModelMeta.parse(File(modelMetaAsset).readAsStringSync(), source: modelMetaAsset);
    expect(
      expected['model_sha256'],
      meta.sha256,
      reason: '$expectedFile was written for another model than model_meta.json describes',
    );
    final classifier = await Classifier.start(meta, File(meta.modelAsset).readAsBytesSync());
    addTearDown(classifier.dispose);
    final atol = (expected['atol'] as num).toDouble();

    for (final entry in (expected['fixtures'] as List).cast<Map<String, dynamic>>()) {
      final want = [for (final p in entry['probabilities'] as List) (p as num).toDouble()];

      // Same tensor in, same numbers out: ONNX Runtime vs ONNX Runtime.
      final tensor = readFloat32('$fixturesDir/${entry['tensor_file']}');
      final got = await classifier.probabilitiesForTensor(tensor);
      expect(maxAbsDiff(got, want).value, lessThanOrEqualTo(atol), reason: '${entry['file']}');

      // The whole app path from the image file: the same top class unless Python's top two
      // were nearly tied (the JPEG decoders may differ by a couple of levels).
      final prediction = await classifier.classify(
        File('$fixturesDir/${entry['file']}').readAsBytesSync(),
      );
      final ranked = [...want]..sort((a, b) => b.compareTo(a));
      if (ranked[0] - ranked[1] > 0.1) {
        expect(prediction.best.index, want.indexOf(ranked[0]), reason: '${entry['file']}');
      }
    }
  }, skip: skip);
}
