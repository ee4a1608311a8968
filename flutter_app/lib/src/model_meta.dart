/// `model_meta.json`: how to feed the exported model, read and checked before anything runs.
///
/// The rules, their order and their messages are those of the Python validator,
/// `fitlens.export.metadata.validate_metadata`; `tests/test_app_contract.py` checks that the
/// constants below equal the Python ones. The app implements exactly one input contract
/// ([fixedInput]); metadata asking for anything else is refused with a message, not guessed at.
library;

import 'dart:convert';

/// Where the export puts the metadata and the model inside the app bundle.
const String modelAssetDir = 'assets/models/';
const String modelMetaAsset = 'assets/models/model_meta.json';

const int schemaVersion = 1;

/// The resize the app implements (lib/src/preprocess.dart); equals fitlens.contract.RESIZE_RULE.
const String resizeRule =
    'PIL.Image.resize(size x size, BILINEAR), antialiased, no crop, aspect not kept';

/// `input.<key>` values the app implements; equals fitlens.export.metadata.FIXED_INPUT.
const Map<String, String> fixedInput = {
  'dtype': 'float32',
  'layout': 'NCHW',
  'color': 'RGB',
  'scale': '0..1',
  'alpha': 'composited over white',
  'exif_orientation': 'applied',
  'normalization': 'inside_model',
  'resize': resizeRule,
};

const List<String> requiredKeys = [
  'schema_version',
  'model_file',
  'sha256',
  'classes',
  'threshold',
  'input',
  'outputs',
];
const List<String> requiredInputKeys = [
  'name',
  'shape',
  'size',
  'mean',
  'std',
  'dtype',
  'layout',
  'color',
  'scale',
  'alpha',
  'exif_orientation',
  'normalization',
  'resize',
];
const List<String> requiredOutputKeys = ['logits', 'probabilities'];

final RegExp _modelFilePattern = RegExp(r'^[A-Za-z0-9._-]+\.onnx$');
final RegExp _sha256Pattern = RegExp(r'^[0-9a-f]{64}$');
const String _schemaHint =
    'expected the model_meta.json schema v$schemaVersion written by '
    'fitlens.export.metadata.build_metadata';

/// model_meta.json is missing, unreadable or breaks the schema; [message] says where and why.
class ModelMetaException implements Exception {
  const ModelMetaException(this.message);

  final String message;

  @override
  String toString() => message;
}

/// The validated metadata: everything the app needs to run and explain the model.
class ModelMeta {
  const ModelMeta({
    required this.modelFile,
    required this.sha256,
    required this.classes,
    required this.threshold,
    required this.inputName,
    required this.size,
    required this.logitsOutput,
    required this.probabilitiesOutput,
    this.modelName,
    this.version,
  });

  /// Parses and validates the text of a model_meta.json; [source] names it in errors.
  factory ModelMeta.parse(String text, {required String source}) {
    final Object? json;
    try {
      json = jsonDecode(text);
    } on FormatException catch (e) {
      throw ModelMetaException('$source: not valid JSON (${e.message})');
    }
    return ModelMeta.fromJson(json, source: source);
  }

  /// Validates decoded JSON with the rules of the Python validator, in its order.
  factory ModelMeta.fromJson(Object? meta, {required String source}) {
    ModelMetaException fail(String field, Object? value, String expected) =>
        ModelMetaException('$source: $field=${jsonEncode(value)}; expected $expected');

    if (meta is! Map<String, dynamic>) {
      throw ModelMetaException(
        '$source: top level is a JSON ${_kind(meta)}; expected an object',
      );
    }
    final missing = [
      for (final key in requiredKeys)
        if (!meta.containsKey(key)) key,
    ];
    for (final (section, keys) in [
      ('input', requiredInputKeys),
      ('outputs', requiredOutputKeys),
    ]) {
      final value = meta[section];
      if (value is Map<String, dynamic>) {
        missing.addAll([
          for (final key in keys)
            if (!value.containsKey(key)) '$section.$key',
        ]);
      }
    }
    if (missing.isNotEmpty) {
      throw ModelMetaException('$source: missing ${missing.join(', ')}; $_schemaHint');
    }

    final version = meta['schema_version'];
    if (version is! int || version != schemaVersion) {
      throw fail(
        'schema_version',
        version,
        '$schemaVersion (re-export the model or update the consumer)',
      );
    }
    final input = meta['input'];
    if (input is! Map<String, dynamic>) {
      throw fail('input', input, 'an object');
    }
    final outputs = meta['outputs'];
    if (outputs is! Map<String, dynamic>) {
      throw fail('outputs', outputs, 'an object');
    }

    final modelFile = meta['model_file'];
    if (modelFile is! String || !_modelFilePattern.hasMatch(modelFile)) {
      throw fail(
        'model_file',
        modelFile,
        'a plain file name ending in .onnx (it is looked up next to model_meta.json)',
      );
    }
    final sha256 = meta['sha256'];
    if (sha256 is! String || !_sha256Pattern.hasMatch(sha256)) {
      throw fail('sha256', sha256, '64 lowercase hex characters (SHA-256 of the .onnx)');
    }
    final classes = meta['classes'];
    if (classes is! List ||
        classes.length < 2 ||
        classes.any((c) => c is! String || c.isEmpty) ||
        classes.toSet().length != classes.length) {
      throw fail('classes', classes, 'a list of at least two unique, non-empty class names');
    }
    final threshold = meta['threshold'];
    if (threshold is! num || !(threshold >= 0 && threshold <= 1)) {
      throw fail('threshold', threshold, 'a number in [0, 1]');
    }

    final inputName = input['name'];
    if (inputName is! String || inputName.isEmpty) {
      throw fail('input.name', inputName, 'a non-empty string (the ONNX input name)');
    }
    for (final MapEntry(:key, :value) in fixedInput.entries) {
      if (input[key] != value) {
        throw fail(
          'input.$key',
          input[key],
          '${jsonEncode(value)} (the only value consumers implement)',
        );
      }
    }
    final size = input['size'];
    if (size is! int || size < 8) {
      throw fail('input.size', size, 'an integer >= 8');
    }
    final shape = input['shape'];
    if (!_isInputShape(shape, size)) {
      throw fail('input.shape', shape, '[1,3,$size,$size] for input.size=$size');
    }
    if (!_isTriple(input['mean'], positive: false)) {
      throw fail('input.mean', input['mean'], 'three numbers');
    }
    if (!_isTriple(input['std'], positive: true)) {
      throw fail('input.std', input['std'], 'three numbers > 0');
    }
    for (final key in requiredOutputKeys) {
      final name = outputs[key];
      if (name is! String || name.isEmpty) {
        throw fail('outputs.$key', name, 'a non-empty string (an ONNX output name)');
      }
    }

    final sourceInfo = meta['source'];
    final registeredVersion = sourceInfo is Map<String, dynamic> ? sourceInfo['version'] : null;
    final modelName = meta['model_name'];
    return ModelMeta(
      modelFile: modelFile,
      sha256: sha256,
      classes: List.unmodifiable(classes.cast<String>()),
      threshold: threshold.toDouble(),
      inputName: inputName,
      size: size,
      logitsOutput: outputs['logits'] as String,
      probabilitiesOutput: outputs['probabilities'] as String,
      modelName: modelName is String ? modelName : null,
      version: registeredVersion is String ? registeredVersion : null,
    );
  }

  /// The .onnx file, relative to assets/models/.
  final String modelFile;
  final String sha256;

  /// Class names in output order.
  final List<String> classes;

  /// Below this top probability the app says "not sure" instead of naming an exercise.
  final double threshold;
  final String inputName;

  /// The square input side in pixels; the tensor is [1, 3, size, size].
  final int size;
  final String logitsOutput;
  final String probabilitiesOutput;
  final String? modelName;

  /// The registry version the model was exported from, if any.
  final String? version;

  String get modelAsset => '$modelAssetDir$modelFile';

  List<int> get inputShape => [1, 3, size, size];
}

bool _isInputShape(Object? shape, int size) =>
    shape is List &&
    shape.length == 4 &&
    shape.every((d) => d is int) &&
    shape[0] == 1 &&
    shape[1] == 3 &&
    shape[2] == size &&
    shape[3] == size;

bool _isTriple(Object? values, {required bool positive}) =>
    values is List &&
    values.length == 3 &&
    values.every((v) => v is num && (!positive || v > 0));

String _kind(Object? value) => switch (value) {
  Map() => 'object',
  List() => 'array',
  String() => 'string',
  bool() => 'boolean',
  num() => 'number',
  _ => 'null',
};
