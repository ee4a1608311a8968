/// The phone's own decoder, for the photos package:image cannot read (HEIC/HEIF: iPhones by
/// default, many Android phones): Android 9+ and iOS decode them through the Flutter engine.
///
/// There is no Python twin for this path: Pillow does not read HEIC, so no training photo came
/// this way. The contract's geometry still holds: the engine decodes straight to the reduced size
/// (ceil(w / k) x ceil(h / k), the size `Image.reduce(k)` gives), which also keeps a 50 MP HEIC
/// photo from ever being held whole; its own scaler stands in for the box filter.
library;

import 'dart:ui' as ui;

import 'preprocess.dart';

/// Decodes [path] with the platform decoder (orientation applied by the platform), reduced as
/// [geometry] asks. Throws [ImageDecodeException] when the platform cannot decode it either.
Future<RgbImage> decodeWithPlatform(String path, InputGeometry geometry) async {
  ui.ImmutableBuffer? buffer;
  ui.ImageDescriptor? descriptor;
  ui.Codec? codec;
  ui.Image? image;
  try {
    buffer = await ui.ImmutableBuffer.fromFilePath(path);
    descriptor = await ui.ImageDescriptor.encoded(buffer);
    final factor = geometry.reduceFactor(descriptor.width, descriptor.height);
    codec = await descriptor.instantiateCodec(
      targetWidth: (descriptor.width + factor - 1) ~/ factor,
      targetHeight: (descriptor.height + factor - 1) ~/ factor,
    );
    image = (await codec.getNextFrame()).image;
    final rgba = await image.toByteData(format: ui.ImageByteFormat.rawStraightRgba);
    if (rgba == null) {
      throw const ImageDecodeException(ImageProblem.corrupt, 'the platform decoder gave no pixels');
    }
    return rgbaOverWhite(rgba.buffer.asUint8List(), image.width, image.height);
  } on ImageDecodeException {
    rethrow;
  } on Exception catch (e) {
    throw ImageDecodeException(
      ImageProblem.unsupportedFormat,
      'neither package:image nor the platform decoder can read this file ($e)',
    );
  } finally {
    image?.dispose();
    codec?.dispose();
    descriptor?.dispose();
    buffer?.dispose();
  }
}
