/// Runs the exported model: the app's only inference service.
///
/// One ONNX Runtime session is created from the model bytes once and lives, with decoding and
/// preprocessing, in a background isolate for the app's lifetime: decoding a 12 MP photo in pure
/// Dart takes a second or more, and neither that nor inference may block the UI thread.
///
/// Why an isolate of our own rather than `OrtSession.runAsync`: the package starts runAsync's
/// helper isolate without awaiting it, so a run soon after the session is created fails with a
/// LateInitializationError (gtbluesky/onnxruntime_flutter#2). Here the session is ready when
/// [Classifier.start] returns, and every tensor, run option and session is released.
library;

import 'dart:async';
import 'dart:isolate';
import 'dart:typed_data';

import 'package:onnxruntime/onnxruntime.dart';

import 'model_meta.dart';
import 'preprocess.dart';

/// How many classes a [Prediction] lists.
const int topK = 3;

class ClassScore {
  const ClassScore({required this.index, required this.label, required this.probability});

  final int index;

  /// The class name from the metadata (the key into exercises.json).
  final String label;
  final double probability;
}

class Prediction {
  const Prediction({
    required this.top,
    required this.preprocessMs,
    required this.inferenceMs,
  });

  /// The [topK] most probable classes of [probabilities], best first.
  factory Prediction.fromProbabilities(
    List<double> probabilities,
    List<String> classes, {
    required int preprocessMs,
    required int inferenceMs,
  }) {
    if (probabilities.length != classes.length) {
      throw ClassifierException(
        'the model returned ${probabilities.length} probabilities for '
        '${classes.length} classes in model_meta.json; the metadata belongs to another model',
      );
    }
    final order = List<int>.generate(probabilities.length, (i) => i)
      ..sort((a, b) => probabilities[b].compareTo(probabilities[a]));
    return Prediction(
      top: [
        for (final i in order.take(topK))
          ClassScore(index: i, label: classes[i], probability: probabilities[i]),
      ],
      preprocessMs: preprocessMs,
      inferenceMs: inferenceMs,
    );
  }

  /// Best first, at most [topK].
  final List<ClassScore> top;
  final int preprocessMs;
  final int inferenceMs;

  ClassScore get best => top.first;

  /// Whether the best class is probable enough to be named (model_meta.json's threshold).
  bool isConfident(double threshold) => best.probability >= threshold;
}

/// Inference failed; [message] says why. [imageUnreadable] is true when the photo, not the
/// model, was the problem.
class ClassifierException implements Exception {
  const ClassifierException(this.message, {this.imageUnreadable = false});

  final String message;
  final bool imageUnreadable;

  @override
  String toString() => message;
}

/// The inference service: start once, [classify] many times, [dispose] at the end.
class Classifier {
  Classifier._(this.meta, this._worker);

  /// Spawns the inference isolate and creates the session from [modelBytes] (the asset named
  /// by [meta]); fails if ONNX Runtime rejects the model or its input/output names differ
  /// from the metadata.
  static Future<Classifier> start(ModelMeta meta, Uint8List modelBytes) async {
    final worker = await _Worker.spawn(
      (replies) => _WorkerConfig(
        replies: replies,
        modelBytes: modelBytes,
        modelAsset: meta.modelAsset,
        inputName: meta.inputName,
        outputName: meta.probabilitiesOutput,
        size: meta.size,
      ),
    );
    return Classifier._(meta, worker);
  }

  final ModelMeta meta;
  final _Worker _worker;

  /// Decodes, preprocesses and classifies an encoded photo (JPEG, PNG, WebP).
  Future<Prediction> classify(Uint8List encodedImage) async {
    final reply = await _worker.request((id) => _Request(id, image: encodedImage));
    return Prediction.fromProbabilities(
      reply.probabilities,
      meta.classes,
      preprocessMs: reply.preprocessMs,
      inferenceMs: reply.inferenceMs,
    );
  }

  /// The probabilities for an already preprocessed [1, 3, size, size] tensor.
  Future<List<double>> probabilitiesForTensor(Float32List tensor) async =>
      (await _worker.request((id) => _Request(id, tensor: tensor))).probabilities;

  /// Releases the session and stops the isolate.
  void dispose() => _worker.close();
}

class _WorkerConfig {
  const _WorkerConfig({
    required this.replies,
    required this.modelBytes,
    required this.modelAsset,
    required this.inputName,
    required this.outputName,
    required this.size,
  });

  final SendPort replies;
  final Uint8List modelBytes;
  final String modelAsset;
  final String inputName;
  final String outputName;
  final int size;
}

class _Request {
  const _Request(this.id, {this.image, this.tensor});

  final int id;
  final Uint8List? image;
  final Float32List? tensor;
}

class _Reply {
  const _Reply(this.id, this.probabilities, this.preprocessMs, this.inferenceMs);

  final int id;
  final List<double> probabilities;
  final int preprocessMs;
  final int inferenceMs;
}

class _Failure {
  const _Failure(this.id, this.message, {this.imageUnreadable = false});

  final int id;
  final String message;
  final bool imageUnreadable;
}

class _Close {
  const _Close();
}

/// The main-isolate end: sends requests, matches replies to them, fails them all if the
/// worker dies.
class _Worker {
  _Worker._(this._replies);

  static Future<_Worker> spawn(_WorkerConfig Function(SendPort replies) config) async {
    final replies = ReceivePort('fitlens-inference-replies');
    final worker = _Worker._(replies);
    replies.listen(worker._onMessage);
    try {
      await Isolate.spawn(
        _workerMain,
        config(replies.sendPort),
        debugName: 'fitlens-inference',
        onError: replies.sendPort,
        onExit: replies.sendPort,
      );
    } on Object {
      replies.close();
      rethrow;
    }
    await worker._ready.future;
    return worker;
  }

  final ReceivePort _replies;
  final Completer<void> _ready = Completer<void>();
  final Map<int, Completer<_Reply>> _pending = {};
  SendPort? _requests;
  int _nextId = 0;
  ClassifierException? _stopped;

  void _onMessage(Object? message) {
    switch (message) {
      case SendPort requests:
        _requests = requests;
        _ready.complete();
      case _Reply reply:
        _pending.remove(reply.id)?.complete(reply);
      case _Failure failure:
        _pending
            .remove(failure.id)
            ?.completeError(
              ClassifierException(failure.message, imageUnreadable: failure.imageUnreadable),
            );
      case [final Object? error, _]:
        // Isolate.spawn's onError: an uncaught error ended the worker (at start-up: the model).
        _stop(
          ClassifierException(
            _ready.isCompleted ? 'the inference isolate crashed: $error' : '$error',
          ),
        );
      case null:
        // Isolate.spawn's onExit.
        _stop(const ClassifierException('the inference isolate has stopped'));
        _replies.close();
    }
  }

  Future<_Reply> request(_Request Function(int id) make) {
    final stopped = _stopped;
    final requests = _requests;
    if (stopped != null || requests == null) {
      return Future.error(stopped ?? const ClassifierException('the classifier is not ready'));
    }
    final id = _nextId++;
    final reply = Completer<_Reply>();
    _pending[id] = reply;
    requests.send(make(id));
    return reply.future;
  }

  void close() {
    if (_stopped == null) {
      _requests?.send(const _Close());
      _stop(const ClassifierException('the classifier has been disposed'));
    }
  }

  void _stop(ClassifierException reason) {
    _stopped ??= reason;
    if (!_ready.isCompleted) {
      _ready.completeError(reason);
    }
    for (final pending in _pending.values) {
      pending.completeError(reason);
    }
    _pending.clear();
  }
}

/// The inference isolate: owns the ONNX Runtime environment, session and every tensor.
Future<void> _workerMain(_WorkerConfig config) async {
  final engine = _Engine.open(config);
  final requests = ReceivePort('fitlens-inference-requests');
  config.replies.send(requests.sendPort);
  await for (final message in requests) {
    if (message is _Request) {
      config.replies.send(engine.handle(message));
    } else if (message is _Close) {
      break;
    }
  }
  requests.close();
  engine.release();
  // The package's own runAsync helper isolate may still hold a port open; do not linger.
  Isolate.exit();
}

class _Engine {
  _Engine._(this.config, this.options, this.session);

  /// Creates the session; throws (and so ends the isolate with a report) if the model does not
  /// load or its tensor names are not the ones model_meta.json promises.
  factory _Engine.open(_WorkerConfig config) {
    OrtEnv.instance.init();
    final options = OrtSessionOptions();
    final OrtSession session;
    try {
      session = OrtSession.fromBuffer(config.modelBytes, options);
    } on Exception catch (e) {
      options.release();
      OrtEnv.instance.release();
      throw ClassifierException('${config.modelAsset}: ONNX Runtime cannot load it ($e)');
    }
    if (!session.inputNames.contains(config.inputName) ||
        !session.outputNames.contains(config.outputName)) {
      final names = 'inputs ${session.inputNames}, outputs ${session.outputNames}';
      session.release();
      options.release();
      OrtEnv.instance.release();
      throw ClassifierException(
        '${config.modelAsset}: $names; model_meta.json expects input "${config.inputName}" '
        'and output "${config.outputName}"',
      );
    }
    return _Engine._(config, options, session);
  }

  final _WorkerConfig config;
  final OrtSessionOptions options;
  final OrtSession session;

  Object handle(_Request request) {
    final watch = Stopwatch()..start();
    try {
      final tensor =
          request.tensor ?? preprocessImageBytes(request.image!, config.size);
      final preprocessMs = watch.elapsedMilliseconds;
      watch.reset();
      final probabilities = _run(tensor);
      return _Reply(request.id, probabilities, preprocessMs, watch.elapsedMilliseconds);
    } on ImageDecodeException catch (e) {
      return _Failure(request.id, e.message, imageUnreadable: true);
    } catch (e) {
      // Anything else, Errors included, fails this request only. Letting it escape would end
      // the isolate (errorsAreFatal) and with it the session: every later photo would fail.
      return _Failure(request.id, 'inference failed: $e');
    }
  }

  List<double> _run(Float32List tensor) {
    // A Float32List (not List<double>) so the package makes a float32 tensor, not float64.
    final input = OrtValueTensor.createTensorWithDataList(tensor, [1, 3, config.size, config.size]);
    final runOptions = OrtRunOptions();
    List<OrtValue?> outputs = const [];
    try {
      outputs = session.run(runOptions, {config.inputName: input}, [config.outputName]);
      final value = outputs.single?.value;
      if (value is! List || value.isEmpty || value.first is! List) {
        throw ClassifierException(
          'output "${config.outputName}" is not a [1, classes] tensor: $value',
        );
      }
      return [for (final p in value.first as List) (p as num).toDouble()];
    } finally {
      for (final output in outputs) {
        output?.release();
      }
      runOptions.release();
      input.release();
    }
  }

  void release() {
    session.release();
    options.release();
    OrtEnv.instance.release();
  }
}
