/// `model_meta.json`: how to feed the exported model and read its answer, checked before
/// anything runs.
///
/// The rules, their order and their messages are those of the Python validator,
/// `fitlens.export.metadata.validate_metadata`; `tests/test_app_contract.py` checks that the
/// constants below equal the Python ones. The app implements exactly the input contract the
/// schema fixes; metadata asking for anything else is refused with a message, not guessed at.
library;

import 'dart:convert';

import 'preprocess.dart';

/// Where the export puts the metadata and the model inside the app bundle.
const String modelAssetDir = 'assets/models/';
const String modelMetaAsset = 'assets/models/model_meta.json';

/// The schema the exporter writes; 1 is still read (stretch, no reject class, older exports).
const int schemaVersion = 2;
const List<int> readableSchemas = [1, 2];

/// Schema 1's resize, as its metadata spells it; equals fitlens.contract.RESIZE_RULE.
const String resizeRule =
    'PIL.Image.resize(size x size, BILINEAR), antialiased, no crop, aspect not kept';

/// The one decision rule the app implements (lib/src/decision.dart); equals
/// fitlens.contract.DECISION_RULE.
const String decisionRule =
    'accept iff the arg-max output is a known class and its probability >= threshold; '
    'arg-max output = reject class: not one of the known exercises; otherwise: not sure';

/// `input.<key>` values the app implements; equals fitlens.export.metadata.FIXED_INPUT.
const Map<String, String> fixedInput = {
  'dtype': 'float32',
  'layout': 'NCHW',
  'color': 'RGB',
  'scale': '0..1',
  'alpha': 'composited over white',
  'exif_orientation': 'applied',
  'normalization': 'inside_model',
};

/// `input.resize.<key>` values the app implements; equals fitlens.export.metadata.FIXED_RESIZE.
const Map<String, String> fixedResize = {
  'filter': 'PIL bilinear, antialiased (Image.resize with Image.BILINEAR)',
  'reduce':
      'when the long side > max_side: PIL Image.reduce(ceil(long side / max_side)) first',
  'letterbox':
      'long side -> size, short side -> (side * size + long // 2) // long, centred at '
      '((size - w) // 2, (size - h) // 2), the rest fill',
};

/// fitlens.contract.RESIZE_MODES, in order.
const List<String> resizeModes = ['stretch', 'letterbox'];

const List<String> requiredKeys = [
  'schema_version',
  'model_file',
  'sha256',
  'classes',
  'reject_class',
  'decision_rule',
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
  'resize',
  'dtype',
  'layout',
  'color',
  'scale',
  'alpha',
  'exif_orientation',
  'normalization',
];
const List<String> requiredResizeKeys = ['mode', 'fill', 'max_side', 'filter', 'reduce', 'letterbox'];
const List<String> requiredOutputKeys = ['logits', 'probabilities'];
const List<String> optionalOutputKeys = ['keypoints', 'person_box'];
const List<String> v1RequiredKeys = [
  'schema_version',
  'model_file',
  'sha256',
  'classes',
  'threshold',
  'input',
  'outputs',
];
const List<String> v1RequiredInputKeys = requiredInputKeys;

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
    required this.rejectClass,
    required this.threshold,
    required this.inputName,
    required this.geometry,
    required this.probabilitiesOutput,
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
      throw ModelMetaException('$source: top level is a JSON ${_kind(meta)}; expected an object');
    }
    if (!meta.containsKey('schema_version')) {
      throw ModelMetaException('$source: missing schema_version; $_schemaHint');
    }
    final version = meta['schema_version'];
    if (version is! int || !readableSchemas.contains(version)) {
      throw fail(
        'schema_version',
        version,
        'one of [${readableSchemas.join(', ')}] (re-export the model or update the consumer)',
      );
    }
    final v1 = version == 1;
    final missing = [
      for (final key in v1 ? v1RequiredKeys : requiredKeys)
        if (!meta.containsKey(key)) key,
    ];
    for (final (section, keys) in [
      ('input', v1 ? v1RequiredInputKeys : requiredInputKeys),
      ('outputs', requiredOutputKeys),
    ]) {
      if (meta[section] case final Map<String, dynamic> value) {
        missing.addAll([
          for (final key in keys)
            if (!value.containsKey(key)) '$section.$key',
        ]);
      }
    }
    if (meta['input'] case {'resize': final Map<String, dynamic> resize} when !v1) {
      missing.addAll([
        for (final key in requiredResizeKeys)
          if (!resize.containsKey(key)) 'input.resize.$key',
      ]);
    }
    if (missing.isNotEmpty) {
      throw ModelMetaException('$source: missing ${missing.join(', ')}; $_schemaHint');
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
    final reject = v1 ? null : meta['reject_class'];
    if (reject != null && (reject is! String || reject.isEmpty || classes.contains(reject))) {
      throw fail('reject_class', reject, 'null or a non-empty name that is not in classes');
    }
    if (!v1 && meta['decision_rule'] != decisionRule) {
      throw fail(
        'decision_rule',
        meta['decision_rule'],
        '${jsonEncode(decisionRule)} (the only rule consumers implement)',
      );
    }
    final threshold = meta['threshold'];
    if (threshold is! num || !(threshold >= 0 && threshold <= 1)) {
      throw fail('threshold', threshold, 'a number in [0, 1]');
    }

    final inputName = input['name'];
    if (inputName is! String || inputName.isEmpty) {
      throw fail('input.name', inputName, 'a non-empty string (the ONNX input name)');
    }
    final fixed = v1 ? {...fixedInput, 'resize': resizeRule} : fixedInput;
    for (final MapEntry(:key, :value) in fixed.entries) {
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
    final geometry = v1
        ? InputGeometry(size: size, mode: ResizeMode.stretch, fill: const [0, 0, 0], maxSide: null)
        : _geometry(input['resize'], size, fail);
    for (final key in [...requiredOutputKeys, ...optionalOutputKeys]) {
      final name = outputs[key];
      if ((requiredOutputKeys.contains(key) || outputs.containsKey(key)) &&
          (name is! String || name.isEmpty)) {
        throw fail('outputs.$key', name, 'a non-empty string (an ONNX output name)');
      }
    }
    _checkVariants(meta['variants'], source, fail);

    return ModelMeta(
      modelFile: modelFile,
      sha256: sha256,
      classes: List.unmodifiable(classes.cast<String>()),
      rejectClass: reject as String?,
      threshold: threshold.toDouble(),
      inputName: inputName,
      geometry: geometry,
      probabilitiesOutput: outputs['probabilities'] as String,
    );
  }

  /// The .onnx file, relative to assets/models/ (content-named: it changes with every export).
  final String modelFile;

  /// SHA-256 of the .onnx, checked at start-up.
  final String sha256;

  /// The known classes, in output order.
  final List<String> classes;

  /// The output after the known classes that means "none of them"; null: the model has none.
  final String? rejectClass;

  /// Below this probability the app says "not sure" instead of naming an exercise.
  final double threshold;
  final String inputName;

  /// Input size, resize mode, letterbox fill and reduce step.
  final InputGeometry geometry;
  final String probabilitiesOutput;

  String get modelAsset => '$modelAssetDir$modelFile';

  /// What the probabilities cover, in order: the known classes, then the reject class.
  List<String> get outputLabels => [...classes, if (rejectClass case final reject?) reject];
}

typedef _Fail = ModelMetaException Function(String field, Object? value, String expected);

InputGeometry _geometry(Object? resize, int size, _Fail fail) {
  if (resize is! Map<String, dynamic>) {
    throw fail('input.resize', resize, 'an object');
  }
  final mode = resize['mode'];
  if (!resizeModes.contains(mode)) {
    throw fail('input.resize.mode', mode, resizeModes.map(jsonEncode).join(' or '));
  }
  final fill = resize['fill'];
  if (fill is! List || fill.length != 3 || fill.any((v) => v is! int || v < 0 || v > 255)) {
    throw fail('input.resize.fill', fill, 'three integers in 0..255');
  }
  final maxSide = resize['max_side'];
  if (maxSide is! int || maxSide < size) {
    throw fail('input.resize.max_side', maxSide, 'an integer >= input.size=$size');
  }
  for (final MapEntry(:key, :value) in fixedResize.entries) {
    if (resize[key] != value) {
      throw fail(
        'input.resize.$key',
        resize[key],
        '${jsonEncode(value)} (the only value consumers implement)',
      );
    }
  }
  return InputGeometry(
    size: size,
    mode: ResizeMode.values.byName(mode as String),
    fill: List.unmodifiable(fill.cast<int>()),
    maxSide: maxSide,
  );
}

/// `variants` (the exporter's other model files, e.g. int8): checked like Python does, though
/// the published metadata carries none.
void _checkVariants(Object? variants, String source, _Fail fail) {
  // Python: `meta.get("variants") or {}`: a missing or falsy value (null, false, 0, "", [],
  // {}) means none.
  final falsy = switch (variants) {
    null || false || 0 || '' => true,
    List(isEmpty: true) || Map(isEmpty: true) => true,
    _ => false,
  };
  if (falsy) {
    return;
  }
  if (variants is! Map<String, dynamic>) {
    throw fail('variants', variants, 'an object of variant name -> file, sha256, threshold');
  }
  for (final MapEntry(key: name, value: entry) in variants.entries) {
    final where = 'variants.$name';
    if (entry is! Map<String, dynamic>) {
      throw fail(where, entry, 'an object with model_file, sha256 and threshold');
    }
    for (final key in ['model_file', 'sha256', 'threshold']) {
      if (!entry.containsKey(key)) {
        throw ModelMetaException('$source: missing $where.$key; $_schemaHint');
      }
    }
    final file = entry['model_file'];
    if (file is! String || !_modelFilePattern.hasMatch(file)) {
      throw fail(
        '$where.model_file',
        file,
        'a plain file name ending in .onnx, next to model_meta.json',
      );
    }
    final digest = entry['sha256'];
    if (digest is! String || !_sha256Pattern.hasMatch(digest)) {
      throw fail('$where.sha256', digest, '64 lowercase hex characters');
    }
    final threshold = entry['threshold'];
    if (threshold is! num || !(threshold >= 0 && threshold <= 1)) {
      throw fail('$where.threshold', threshold, 'a number in [0, 1]');
    }
  }
}

bool _isInputShape(Object? shape, int size) =>
    shape is List &&
    shape.every((d) => d is int) &&
    shape.length == 4 &&
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
