/// The model input, computed exactly as training and export compute it in Python
/// (`fitlens.data.images.preprocess` = `load_rgb` then `fit_to_input`). Pure Dart with no Flutter
/// imports, so it runs in a background isolate and in plain unit tests.
///
/// The steps, each matching its Python counterpart:
///
/// 1. Decode with package:image and apply the EXIF orientation (PIL's `exif_transpose`).
///    package:image's JPEG decoder already bakes the orientation in and drops the tag;
///    `bakeOrientation` covers PNG and WebP, which keep it.
/// 2. Any format to 8-bit RGB, transparent pixels composited over white with Pillow's own
///    integer formula ([compositeOverWhite]), palettes and greyscale expanded.
/// 3. When the long side is over the metadata's `max_side`: Pillow's `Image.reduce(k)`,
///    k = ceil(long side / max_side) ([reduceLikePillow]), right after decoding, so the
///    full-size pixels are dropped before anything else runs.
/// 4. Stretch to size x size, or letterbox (long side to size, centred on a canvas of the fill
///    colour) exactly as Pillow's `Image.resize(..., BILINEAR)` does for 8-bit RGB
///    ([resizeBilinearLikePillow], [fitToInput]). package:image's `copyResize` is not used: its
///    bilinear does not widen the filter when shrinking, so it would alias.
/// 5. Divide by 255 into float32, planar CHW, shape [1, 3, size, size] ([toChwFloat]).
///    Normalisation (mean/std) is inside the model.
///
/// `test/preprocess_test.dart` compares the result with tensors Python wrote for the golden
/// fixtures; `tests/test_app_preprocess_port.py` runs this algorithm, ported line by line to
/// numpy, against Pillow itself (resize, reduce, letterbox, compositing).
///
/// Known differences from Pillow that the fixtures do not cover: 4:2:0 JPEGs (package:image
/// repeats chroma samples, libjpeg interpolates them, so colour edges differ by a few levels),
/// CMYK JPEGs and 16-bit PNGs (8-bit rounding may differ by one level).
library;

import 'dart:io';
import 'dart:typed_data';

import 'package:image/image.dart' as img;

/// Decompression-bomb guard, as `fitlens.data.images.DEFAULT_MAX_PIXELS`.
const int defaultMaxPixels = 64000000;

/// Why a photo could not be used: each kind has its own text for the user.
enum ImageProblem {
  /// Not a format package:image decodes (HEIC, for one): the phone's own decoder may still read it.
  unsupportedFormat,

  /// Over [defaultMaxPixels].
  tooLarge,

  /// Truncated or damaged.
  corrupt,
}

/// The bytes are not an image this app can use; [message] says why (for logs, in English).
class ImageDecodeException implements Exception {
  const ImageDecodeException(this.problem, this.message);

  final ImageProblem problem;
  final String message;

  @override
  String toString() => message;
}

enum ResizeMode { stretch, letterbox }

/// How a decoded photo becomes the square model input: `input.size` and `input.resize` of
/// model_meta.json (`fitlens.contract.Resize` in Python).
class InputGeometry {
  const InputGeometry({
    required this.size,
    required this.mode,
    required this.fill,
    required this.maxSide,
  });

  final int size;
  final ResizeMode mode;

  /// Letterbox padding, 8-bit RGB.
  final List<int> fill;

  /// Photos whose long side is larger are reduced by a whole factor first; null: never
  /// (schema-1 models).
  final int? maxSide;

  List<int> get inputShape => [1, 3, size, size];

  /// The whole factor a [width] x [height] photo is reduced by first (1: not at all).
  int reduceFactor(int width, int height) {
    final side = maxSide;
    if (side == null) {
      return 1;
    }
    final longest = width > height ? width : height;
    return (longest + side - 1) ~/ side;
  }

  /// Where a [width] x [height] image lands in the input square: long side to [size], short
  /// side rounded half up in whole numbers (no float rounding to differ from Python).
  ({int left, int top, int width, int height}) placement(int width, int height) {
    if (mode == ResizeMode.stretch) {
      return (left: 0, top: 0, width: size, height: size);
    }
    final longest = width > height ? width : height;
    final w = _atLeastOne((width * size + longest ~/ 2) ~/ longest);
    final h = _atLeastOne((height * size + longest ~/ 2) ~/ longest);
    return (left: (size - w) ~/ 2, top: (size - h) ~/ 2, width: w, height: h);
  }
}

int _atLeastOne(int v) => v < 1 ? 1 : v;

/// 8-bit RGB pixels, rows top to bottom, interleaved RGBRGB... like a Pillow "RGB" image.
class RgbImage {
  RgbImage(this.width, this.height, this.pixels)
    : assert(pixels.length == width * height * 3, 'pixels must hold width*height*3 bytes');

  final int width;
  final int height;
  final Uint8List pixels;
}

/// A photo file to the model input: float32 NCHW [1, 3, size, size] in 0..1. Meant for a
/// background isolate: the file is read there, so the photo's bytes never reach the UI isolate.
Float32List preprocessFile(String path, InputGeometry geometry) =>
    preprocessImageBytes(File(path).readAsBytesSync(), geometry);

/// Encoded image bytes to the model input: float32 NCHW [1, 3, size, size] in 0..1.
Float32List preprocessImageBytes(
  Uint8List encoded,
  InputGeometry geometry, {
  int maxPixels = defaultMaxPixels,
}) => toChwFloat(fitToInput(decodeRgb(encoded, maxPixels: maxPixels), geometry));

/// Steps 3 and 4: reduce, then stretch or letterbox to the input square (Python's
/// `fit_to_input`). Returns 8-bit pixels, as the fixtures store them.
RgbImage fitToInput(RgbImage rgb, InputGeometry geometry) {
  final reduced = reduceLikePillow(rgb, geometry.reduceFactor(rgb.width, rgb.height));
  final place = geometry.placement(reduced.width, reduced.height);
  final resized = resizeBilinearLikePillow(reduced, place.width, place.height);
  if (geometry.mode == ResizeMode.stretch) {
    return resized;
  }
  final size = geometry.size;
  final canvas = Uint8List(size * size * 3);
  for (var i = 0; i < canvas.length; i += 3) {
    canvas[i] = geometry.fill[0];
    canvas[i + 1] = geometry.fill[1];
    canvas[i + 2] = geometry.fill[2];
  }
  final rowBytes = place.width * 3;
  for (var y = 0; y < place.height; y++) {
    canvas.setRange(
      ((place.top + y) * size + place.left) * 3,
      ((place.top + y) * size + place.left) * 3 + rowBytes,
      resized.pixels,
      y * rowBytes,
    );
  }
  return RgbImage(size, size, canvas);
}

/// Steps 1 and 2: decode, orient and flatten to 8-bit RGB over white.
RgbImage decodeRgb(Uint8List encoded, {int maxPixels = defaultMaxPixels}) {
  final img.Image decoded;
  try {
    decoded = _decode(encoded, maxPixels);
  } on ImageDecodeException {
    rethrow;
  } on Exception catch (e) {
    throw ImageDecodeException(ImageProblem.corrupt, 'corrupt or truncated image ($e)');
  } on Error catch (e) {
    // The bytes are untrusted: package:image's format sniffing, header parsing and decoders
    // throw Errors on malformed input (RangeError past the end of a truncated file, failed
    // casts, bad state). That is a bad photo, not a bug in the app.
    throw ImageDecodeException(ImageProblem.corrupt, 'corrupt or truncated image ($e)');
  }
  final exif = decoded.exif.imageIfd;
  final oriented = exif.hasOrientation && exif.orientation != 1
      ? img.bakeOrientation(decoded)
      : decoded;
  return _toRgb(oriented);
}

/// Step 1 without the orientation: the first frame, after the size guard.
img.Image _decode(Uint8List encoded, int maxPixels) {
  final decoder = img.findDecoderForData(encoded);
  if (decoder == null) {
    throw const ImageDecodeException(
      ImageProblem.unsupportedFormat,
      'not an image package:image can decode; expected a JPEG, PNG or WebP file',
    );
  }
  final info = decoder.startDecode(encoded);
  if (info != null && info.width * info.height > maxPixels) {
    throw ImageDecodeException(
      ImageProblem.tooLarge,
      '${info.width}x${info.height} pixels is over the limit of $maxPixels '
      '(decompression-bomb guard); downscale the image first',
    );
  }
  final decoded = decoder.decode(encoded, frame: 0);
  if (decoded == null) {
    throw const ImageDecodeException(ImageProblem.corrupt, 'corrupt or truncated image');
  }
  return decoded;
}

RgbImage _toRgb(img.Image image) {
  final width = image.width;
  final height = image.height;
  if (image.format == img.Format.uint8 && image.numChannels == 3 && !image.hasPalette) {
    // Plain 8-bit RGB (every JPEG): nothing to expand or composite.
    return RgbImage(width, height, image.getBytes(order: img.ChannelOrder.rgb));
  }
  final rgba = image
      .convert(format: img.Format.uint8, numChannels: 4, noAnimation: true)
      .getBytes(order: img.ChannelOrder.rgba);
  return rgbaOverWhite(rgba, width, height);
}

/// Interleaved 8-bit RGBA (straight alpha) to RGB composited over white.
RgbImage rgbaOverWhite(Uint8List rgba, int width, int height) {
  final rgb = Uint8List(width * height * 3);
  for (var i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
    final alpha = rgba[j + 3];
    rgb[i] = compositeOverWhite(rgba[j], alpha);
    rgb[i + 1] = compositeOverWhite(rgba[j + 1], alpha);
    rgb[i + 2] = compositeOverWhite(rgba[j + 2], alpha);
  }
  return RgbImage(width, height, rgb);
}

/// One channel of [value] at [alpha] over opaque white, bit-exact with Pillow's
/// `Image.alpha_composite(white, rgba)` (libImaging/AlphaComposite.c: 7 extra bits of
/// precision, division by 255 rounded with shifts). Identity at alpha 255.
int compositeOverWhite(int value, int alpha) {
  const precisionBits = 7;
  final blend = 255 * (255 - alpha); // background alpha is 255
  final outAlpha255 = alpha * 255 + blend;
  final coef1 = alpha * 255 * 255 * (1 << precisionBits) ~/ outAlpha255;
  final coef2 = 255 * (1 << precisionBits) - coef1;
  final tmp = value * coef1 + 255 * coef2 + (0x80 << precisionBits);
  return (((tmp >> 8) + tmp) >> 8) >> precisionBits;
}

/// Step 3: Pillow's `Image.reduce(factor)` for 8-bit RGB, bit for bit (libImaging/Reduce.c).
/// Each output pixel is the sum of its factor x factor block (cut short at the right and bottom
/// edges) plus half the block's pixel count, times the block's fixed-point reciprocal, >> 24.
RgbImage reduceLikePillow(RgbImage src, int factor) {
  if (factor == 1) {
    return src;
  }
  final outWidth = (src.width + factor - 1) ~/ factor;
  final outHeight = (src.height + factor - 1) ~/ factor;
  final stride = src.width * 3;
  final inPixels = src.pixels;
  final out = Uint8List(outWidth * outHeight * 3);
  for (var oy = 0; oy < outHeight; oy++) {
    final y0 = oy * factor;
    final y1 = y0 + factor < src.height ? y0 + factor : src.height;
    for (var ox = 0; ox < outWidth; ox++) {
      final x0 = ox * factor;
      final x1 = x0 + factor < src.width ? x0 + factor : src.width;
      final count = (y1 - y0) * (x1 - x0);
      var s0 = count ~/ 2;
      var s1 = s0;
      var s2 = s0;
      for (var y = y0; y < y1; y++) {
        for (var p = y * stride + x0 * 3; p < y * stride + x1 * 3; p += 3) {
          s0 += inPixels[p];
          s1 += inPixels[p + 1];
          s2 += inPixels[p + 2];
        }
      }
      final multiplier = _reduceMultiplier(count);
      final o = (oy * outWidth + ox) * 3;
      out[o] = (s0 * multiplier) >> 24;
      out[o + 1] = (s1 * multiplier) >> 24;
      out[o + 2] = (s2 * multiplier) >> 24;
    }
  }
  return RgbImage(outWidth, outHeight, out);
}

final Float32List _float32 = Float32List(1);

/// Reduce.c's `division_UINT32(count, 8)`: 2^32 / (256 * count) divided in C `float`, then
/// truncated. Dart divides in double and rounds to float32 here; the Python twin shows the two
/// agree for every block of up to 131072 pixels.
int _reduceMultiplier(int count) {
  _float32[0] = 4294967296.0 / (256 * count);
  return _float32[0].toInt();
}

// Pillow's Resample.c, 8 bits per channel, ported literally:
// - the bilinear filter is a triangle with support 1, widened by max(1, in/out) when shrinking
//   (that is the antialiasing);
// - output pixel i is centred at (i + 0.5) * in/out in input coordinates; inputs from
//   int(centre - support + 0.5) to int(centre + support + 0.5) contribute;
// - weights are normalised per output pixel, then turned into fixed point with 22 fraction
//   bits, rounded half away from zero;
// - two passes (horizontal and vertical, in the order [resizeBilinearLikePillow] explains),
//   each accumulating from 0.5 (in fixed point) and rounding back to 8 bits, clamped to
//   0..255, before the next.
// Dart doubles are IEEE doubles like C's, and the expressions keep C's evaluation order, so the
// weights, and hence the pixels, are bit-identical.

/// Pillow: PRECISION_BITS = 32 - 8 - 2.
const int _precisionBits = 32 - 8 - 2;
const int _half = 1 << (_precisionBits - 1);

class _Coefficients {
  _Coefficients(this.kernelSize, this.bounds, this.weights);

  final int kernelSize;

  /// Per output pixel: first input index, number of inputs.
  final Int32List bounds;

  /// Per output pixel: [kernelSize] fixed-point weights (unused tail is 0).
  final Int32List weights;
}

double _triangle(double x) {
  final ax = x < 0.0 ? -x : x;
  return ax < 1.0 ? 1.0 - ax : 0.0;
}

_Coefficients _precomputeCoefficients(int inSize, int outSize) {
  const filterSupport = 1.0;
  final scale = inSize / outSize;
  final filterScale = scale < 1.0 ? 1.0 : scale;
  final support = filterSupport * filterScale;
  final kernelSize = support.ceil() * 2 + 1;
  final bounds = Int32List(outSize * 2);
  final weights = Int32List(outSize * kernelSize);
  final k = Float64List(kernelSize);
  final ss = 1.0 / filterScale;
  for (var xx = 0; xx < outSize; xx++) {
    final center = (xx + 0.5) * scale;
    var xmin = (center - support + 0.5).toInt();
    if (xmin < 0) {
      xmin = 0;
    }
    var xmax = (center + support + 0.5).toInt();
    if (xmax > inSize) {
      xmax = inSize;
    }
    xmax -= xmin;
    var ww = 0.0;
    for (var x = 0; x < xmax; x++) {
      final w = _triangle(((x + xmin) - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (var x = 0; x < xmax; x++) {
      final v = ww != 0.0 ? k[x] / ww : k[x];
      weights[xx * kernelSize + x] = v < 0
          ? (-0.5 + v * (1 << _precisionBits)).toInt()
          : (0.5 + v * (1 << _precisionBits)).toInt();
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return _Coefficients(kernelSize, bounds, weights);
}

int _clip8(int acc) {
  final v = acc >> _precisionBits;
  return v < 0 ? 0 : (v > 255 ? 255 : v);
}

RgbImage _resampleHorizontal(RgbImage src, int outWidth, _Coefficients c) {
  final inPixels = src.pixels;
  final out = Uint8List(outWidth * src.height * 3);
  for (var y = 0; y < src.height; y++) {
    final inRow = y * src.width * 3;
    final outRow = y * outWidth * 3;
    for (var xx = 0; xx < outWidth; xx++) {
      final xmin = c.bounds[xx * 2];
      final count = c.bounds[xx * 2 + 1];
      final k = xx * c.kernelSize;
      var s0 = _half;
      var s1 = _half;
      var s2 = _half;
      for (var x = 0; x < count; x++) {
        final w = c.weights[k + x];
        final p = inRow + (xmin + x) * 3;
        s0 += inPixels[p] * w;
        s1 += inPixels[p + 1] * w;
        s2 += inPixels[p + 2] * w;
      }
      final o = outRow + xx * 3;
      out[o] = _clip8(s0);
      out[o + 1] = _clip8(s1);
      out[o + 2] = _clip8(s2);
    }
  }
  return RgbImage(outWidth, src.height, out);
}

RgbImage _resampleVertical(RgbImage src, int outHeight, _Coefficients c) {
  final inPixels = src.pixels;
  final stride = src.width * 3;
  final out = Uint8List(src.width * outHeight * 3);
  for (var yy = 0; yy < outHeight; yy++) {
    final ymin = c.bounds[yy * 2];
    final count = c.bounds[yy * 2 + 1];
    final k = yy * c.kernelSize;
    for (var xx = 0; xx < src.width; xx++) {
      var s0 = _half;
      var s1 = _half;
      var s2 = _half;
      for (var y = 0; y < count; y++) {
        final w = c.weights[k + y];
        final p = (ymin + y) * stride + xx * 3;
        s0 += inPixels[p] * w;
        s1 += inPixels[p + 1] * w;
        s2 += inPixels[p + 2] * w;
      }
      final o = (yy * src.width + xx) * 3;
      out[o] = _clip8(s0);
      out[o + 1] = _clip8(s1);
      out[o + 2] = _clip8(s2);
    }
  }
  return RgbImage(src.width, outHeight, out);
}

/// Step 4: Pillow's `Image.resize((width, height), Image.BILINEAR)` for an 8-bit RGB image,
/// bit for bit. A pass whose size does not change is skipped, as Pillow skips it.
///
/// Pass order, as Pillow 13's ImagingResampleInner chooses it: vertical first when the height
/// shrinks by more than twice as many pixels as the width does, else horizontal first. The
/// order decides where the intermediate 8-bit rounding happens, so it changes pixels by up to
/// one level; older Pillow releases always went horizontal first.
RgbImage resizeBilinearLikePillow(RgbImage src, int width, int height) {
  final shrinkY = src.height - height;
  final horizontalFirst = !(shrinkY > 0 && shrinkY > (src.width - width) * 2);
  var out = src;
  if (horizontalFirst && width != src.width) {
    out = _resampleHorizontal(out, width, _precomputeCoefficients(src.width, width));
  }
  if (height != src.height) {
    out = _resampleVertical(out, height, _precomputeCoefficients(src.height, height));
  }
  if (!horizontalFirst && width != src.width) {
    out = _resampleHorizontal(out, width, _precomputeCoefficients(src.width, width));
  }
  return out;
}

/// Step 5: interleaved 8-bit RGB to planar float32 in 0..1, i.e. the [1, 3, h, w] tensor's data.
/// v / 255 in double, then rounded to float32, equals numpy's float32(v) / float32(255).
Float32List toChwFloat(RgbImage image) {
  final plane = image.width * image.height;
  final pixels = image.pixels;
  final out = Float32List(3 * plane);
  for (var i = 0; i < plane; i++) {
    out[i] = pixels[i * 3] / 255.0;
    out[plane + i] = pixels[i * 3 + 1] / 255.0;
    out[2 * plane + i] = pixels[i * 3 + 2] / 255.0;
  }
  return out;
}
