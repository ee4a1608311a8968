/// Runs the exported model: the app's only inference service.
///
/// Nothing heavy runs on the UI isolate: the photo is read, decoded, reduced and resized in a
/// short-lived background isolate ([Isolate.run]; it exits with the tensor, so its memory,
/// the full-size photo included, is freed at once), and ONNX Runtime runs on the
/// flutter_onnxruntime plugin's own background thread (the platform's TaskQueue, since 1.7.0).
/// The UI isolate only passes the 0.6 MB tensor in and the probabilities out.
library;

import 'dart:isolate';
import 'dart:typed_data';

import 'package:flutter_onnxruntime/flutter_onnxruntime.dart';

import 'decision.dart';
import 'model_meta.dart';
import 'platform_decode.dart';
import 'preprocess.dart';

/// One classified photo.
class Prediction {
  const Prediction({required this.decision, required this.preprocessMs, required this.inferenceMs});

  final Decision decision;
  final int preprocessMs;
  final int inferenceMs;
}

/// Inference failed for a reason other than the photo; [message] says why (for logs).
class ClassifierException implements Exception {
  const ClassifierException(this.message);

  final String message;

  @override
  String toString() => message;
}

/// What the screens use; tests hand them a fake.
abstract interface class ExerciseClassifier {
  /// Classifies the photo file at [path]. Throws [ImageDecodeException] for a photo that
  /// cannot be used, [ClassifierException] when inference fails.
  Future<Prediction> classify(String path);

  /// Releases the session.
  Future<void> close();
}

class OnnxClassifier implements ExerciseClassifier {
  OnnxClassifier._(this.meta, this._session);

  /// Opens a session on the verified model file at [modelPath]; fails if ONNX Runtime rejects
  /// it or its tensor names are not the ones [meta] promises.
  static Future<OnnxClassifier> open(ModelMeta meta, String modelPath) async {
    final OrtSession session;
    try {
      session = await OnnxRuntime().createSession(modelPath);
    } on Exception catch (e) {
      throw ClassifierException('${meta.modelAsset}: ONNX Runtime cannot load it ($e)');
    }
    if (!session.inputNames.contains(meta.inputName) ||
        !session.outputNames.contains(meta.probabilitiesOutput)) {
      final names = 'inputs ${session.inputNames}, outputs ${session.outputNames}';
      await session.close();
      throw ClassifierException(
        '${meta.modelAsset}: $names; $modelMetaAsset expects input "${meta.inputName}" and '
        'output "${meta.probabilitiesOutput}"',
      );
    }
    return OnnxClassifier._(meta, session);
  }

  final ModelMeta meta;
  final OrtSession _session;

  @override
  Future<Prediction> classify(String path) async {
    final watch = Stopwatch()..start();
    final tensor = await _preprocess(path, meta.geometry);
    final preprocessMs = watch.elapsedMilliseconds;
    watch.reset();
    final probabilities = await probabilitiesFor(tensor);
    final decision = decide(
      probabilities,
      meta.outputLabels,
      numKnown: meta.classes.length,
      threshold: meta.threshold,
    );
    return Prediction(
      decision: decision,
      preprocessMs: preprocessMs,
      inferenceMs: watch.elapsedMilliseconds,
    );
  }

  /// The model's probabilities for an already preprocessed [1, 3, size, size] tensor.
  Future<List<double>> probabilitiesFor(Float32List tensor) async {
    // A Float32List, so the plugin makes a float32 tensor.
    final input = await OrtValue.fromList(tensor, meta.geometry.inputShape);
    var outputs = const <String, OrtValue>{};
    try {
      outputs = await _session.run({meta.inputName: input});
      final probabilities = outputs[meta.probabilitiesOutput];
      if (probabilities == null) {
        throw ClassifierException('the model returned no "${meta.probabilitiesOutput}" output');
      }
      return [for (final p in await probabilities.asFlattenedList()) (p as num).toDouble()];
    } on ClassifierException {
      rethrow;
    } on Exception catch (e) {
      throw ClassifierException('inference failed ($e)');
    } finally {
      // Every output (a pose model also returns keypoints and the person box) and the input
      // hold native memory until disposed.
      for (final value in outputs.values) {
        await value.dispose();
      }
      await input.dispose();
    }
  }

  @override
  Future<void> close() => _session.close();
}

/// package:image in a background isolate; what it cannot read (HEIC) goes to the platform
/// decoder, whose reduced pixels are fitted in a background isolate too.
Future<Float32List> _preprocess(String path, InputGeometry geometry) async {
  try {
    return await Isolate.run(() => preprocessFile(path, geometry));
  } on ImageDecodeException catch (e) {
    if (e.problem != ImageProblem.unsupportedFormat) {
      rethrow;
    }
  }
  final reduced = await decodeWithPlatform(path, geometry);
  return Isolate.run(() => toChwFloat(fitToInput(reduced, geometry)));
}
