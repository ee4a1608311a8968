/// Puts the bundled model where ONNX Runtime can open it, and proves it is the model
/// model_meta.json describes (its SHA-256) before any photo is classified.
///
/// ONNX Runtime opens a model by path; Flutter assets are not files (on Android they live inside
/// the APK). So the asset is copied once into the app's support folder under its own,
/// content-derived name (a new export has a new name, so a copy is never stale), and every start
/// hashes that file in a background isolate: a model that differs from its metadata, or a copy
/// damaged on disk, never runs. Copies of older exports are deleted.
library;

import 'dart:io';
import 'dart:isolate';

import 'package:crypto/crypto.dart';
import 'package:flutter/foundation.dart' show FlutterError;
import 'package:flutter/services.dart';

import 'model_meta.dart';

/// The bundled model is not the one model_meta.json describes (or cannot be copied out).
class ModelIntegrityException implements Exception {
  const ModelIntegrityException(this.message);

  final String message;

  @override
  String toString() => message;
}

/// Returns the path of a verified copy of [meta]'s model inside [folder].
///
/// The asset is loaded on this isolate only when there is no copy yet: `AssetBundle.load` hands
/// over the engine's buffer, which is viewed, not copied, and written by dart:io's own threads.
Future<String> installModel(AssetBundle bundle, ModelMeta meta, Directory folder) async {
  await folder.create(recursive: true);
  final target = File('${folder.path}${Platform.pathSeparator}${meta.modelFile}');
  var freshCopy = false;
  if (!target.existsSync()) {
    await _copyAsset(bundle, meta.modelAsset, target);
    freshCopy = true;
  }
  var digest = await fileSha256(target.path);
  if (digest != meta.sha256 && !freshCopy) {
    // A copy damaged on disk since an earlier start: copy the intact asset again, once.
    await _copyAsset(bundle, meta.modelAsset, target);
    digest = await fileSha256(target.path);
  }
  if (digest != meta.sha256) {
    target.deleteSync();
    throw ModelIntegrityException(
      '${meta.modelAsset}: SHA-256 $digest, but $modelMetaAsset expects ${meta.sha256}: the '
      'model and its metadata come from different exports. Run `python scripts/export.py` '
      'again (it writes both) and rebuild the app.',
    );
  }
  _deleteOtherModels(folder, keep: target);
  return target.path;
}

/// Hex SHA-256 of a file, read in chunks in a background isolate (the model is tens of MB).
Future<String> fileSha256(String path) =>
    Isolate.run(() async => (await sha256.bind(File(path).openRead()).first).toString());

Future<void> _copyAsset(AssetBundle bundle, String asset, File target) async {
  final ByteData data;
  try {
    data = await bundle.load(asset);
  } on FlutterError {
    throw ModelMetaException(
      '$asset: not in the app bundle, though $modelMetaAsset names it; run '
      '`python scripts/export.py` (it writes both into flutter_app/assets/models/), then '
      'rebuild the app',
    );
  }
  // Written beside the target and renamed: a copy cut short (app killed, disk full) never
  // sits at the final path.
  final partial = File('${target.path}.partial');
  try {
    await partial.writeAsBytes(
      data.buffer.asUint8List(data.offsetInBytes, data.lengthInBytes),
      flush: true,
    );
    await partial.rename(target.path);
  } on FileSystemException catch (e) {
    throw ModelIntegrityException('${target.path}: the model cannot be copied out ($e)');
  }
}

void _deleteOtherModels(Directory folder, {required File keep}) {
  for (final entity in folder.listSync()) {
    if (entity is File &&
        entity.path != keep.path &&
        (entity.path.endsWith('.onnx') || entity.path.endsWith('.onnx.partial'))) {
      entity.deleteSync();
    }
  }
}
