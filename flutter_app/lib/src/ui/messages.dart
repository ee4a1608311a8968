/// Turns a failure into a sentence for the user, in their language. The English technical
/// message stays in the logs (and, for start-up failures, behind "Technical details").
library;

import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:flutter/services.dart' show PlatformException;

import '../preprocess.dart';

String failureText(AppLocalizations l10n, Object error) => switch (error) {
  ImageDecodeException(problem: ImageProblem.unsupportedFormat) => l10n.photoUnsupported,
  ImageDecodeException(problem: ImageProblem.tooLarge) => l10n.photoTooLarge,
  ImageDecodeException(problem: ImageProblem.corrupt) => l10n.photoDamaged,
  // image_picker's codes for a refused permission.
  PlatformException(code: 'camera_access_denied') => l10n.cameraDenied,
  PlatformException(code: 'photo_access_denied') => l10n.photosDenied,
  PlatformException() => l10n.pickFailed,
  _ => l10n.recognitionFailed,
};
