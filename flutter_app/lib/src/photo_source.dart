/// Where photos come from: image_picker, behind an interface the widget tests replace.
library;

import 'package:flutter/foundation.dart' show TargetPlatform, defaultTargetPlatform, kIsWeb;
import 'package:image_picker/image_picker.dart';

enum PhotoOrigin { camera, gallery }

abstract interface class PhotoSource {
  /// The path of the photo the user took or chose; null when they cancelled.
  Future<String?> pick(PhotoOrigin origin);

  /// Android can destroy the app's activity while the camera or gallery is open (low memory);
  /// the photo then arrives on the next start instead. Null when there is none.
  Future<String?> recoverLost();
}

class PickerPhotoSource implements PhotoSource {
  final ImagePicker _picker = ImagePicker();

  @override
  Future<String?> pick(PhotoOrigin origin) async {
    // No maxWidth, maxHeight or imageQuality: the picker would re-encode the photo, and the
    // model must see the pixels Python's preprocessing sees (the reduce step bounds the size).
    final file = await _picker.pickImage(
      source: origin == PhotoOrigin.camera ? ImageSource.camera : ImageSource.gallery,
    );
    return file?.path;
  }

  @override
  Future<String?> recoverLost() async {
    if (kIsWeb || defaultTargetPlatform != TargetPlatform.android) {
      return null; // retrieveLostData is Android-only; elsewhere it throws UnimplementedError.
    }
    final response = await _picker.retrieveLostData();
    if (response.isEmpty) {
      return null;
    }
    if (response.exception case final error?) {
      throw error;
    }
    return response.file?.path;
  }
}
