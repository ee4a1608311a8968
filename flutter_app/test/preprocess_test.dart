// The Dart preprocessing against the tensors Python computed for the same files
// (test/fixtures, written by scripts/make_fixtures.py from fitlens.data.images.preprocess).
import 'dart:convert';
import 'dart:io';
import 'dart:typed_data';

import 'package:fitlens_app/src/model_meta.dart';
import 'package:fitlens_app/src/preprocess.dart';
import 'package:flutter_test/flutter_test.dart';

import 'fixture_support.dart';

void main() {
  final index = fixtureIndex();
  final size = index['size'] as int;

  test('fixtures were made with the resize rule this app implements', () {
    expect(index['resize'], resizeRule);
    expect(index['layout'], fixedInput['layout']);
  });

  group('fixture image -> tensor matches Python', () {
    for (final entry in fixtureEntries()) {
      test('${entry['file']}', () {
        final expected = readFloat32('$fixturesDir/${entry['tensor_file']}');
        final actual = preprocessImageBytes(
          File('$fixturesDir/${entry['file']}').readAsBytesSync(),
          size,
        );
        expect(actual.length, 3 * size * size);
        expect(actual.length, expected.length);
        final diff = maxAbsDiff(actual, expected);
        final tolerance = (entry['max_abs_diff'] as num).toDouble();
        final plane = size * size;
        // Shown on failure, and worth reading once on success too: the decoders' real gap.
        printOnFailure(
          '${entry['file']}: max |diff| ${(diff.value * 255).toStringAsFixed(2)}/255 at '
          'channel ${diff.index ~/ plane}, y ${diff.index % plane ~/ size}, '
          'x ${diff.index % size}; allowed ${(tolerance * 255).toStringAsFixed(2)}/255',
        );
        expect(diff.value, lessThanOrEqualTo(tolerance + 1e-6));
      });
    }
  });

  test('EXIF orientation 6 is applied: the sideways JPEG decodes upright', () {
    final rgb = decodeRgb(File('$fixturesDir/rotated_exif6.jpg').readAsBytesSync());
    expect(rgb.width, greaterThan(rgb.height));
  });

  test('resize is Pillow BILINEAR, pixel for pixel (values from Pillow 13)', () {
    final row = RgbImage(
      5,
      1,
      Uint8List.fromList([0, 10, 20, 100, 110, 120, 200, 210, 220, 255, 0, 128, 30, 60, 90]),
    );
    expect(resizeBilinearLikePillow(row, 2, 1).pixels, [98, 96, 111, 164, 72, 136]);
    expect(resizeBilinearLikePillow(row, 7, 1).pixels, [
      0, 10, 20, 57, 67, 77, 129, 139, 149, 200, 210, 220, //
      239, 60, 154, 159, 26, 112, 30, 60, 90,
    ]);
    final square = RgbImage(
      2,
      2,
      Uint8List.fromList([0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0, 255]),
    );
    expect(resizeBilinearLikePillow(square, 3, 3).pixels, [
      0, 0, 0, 128, 128, 128, 255, 255, 255, //
      128, 0, 0, 128, 64, 128, 128, 128, 255, //
      255, 0, 0, 128, 0, 128, 0, 0, 255,
    ]);
  });

  test('a tall image that shrinks in height is resized vertical pass first, as Pillow 13', () {
    // 2x6 -> 3x2: horizontal-first rounding would give different pixels here.
    final tall = RgbImage(
      2,
      6,
      Uint8List.fromList([
        248, 194, 190, 207, 147, 26, 237, 21, 245, 211, 239, 45, 5, 157, 159, 60, 54, 236, //
        109, 46, 199, 82, 32, 205, 36, 7, 134, 222, 57, 146, 8, 149, 14, 15, 22, 10,
      ]),
    );
    expect(resizeBilinearLikePillow(tall, 3, 2).pixels, [
      166, 101, 204, 161, 123, 156, 156, 144, 108, //
      43, 71, 123, 79, 57, 131, 115, 42, 138,
    ]);
  });

  test('alpha compositing over white is Pillow alpha_composite (values from Pillow 13)', () {
    expect(compositeOverWhite(0, 128), 127);
    expect(compositeOverWhite(0, 1), 254);
    expect(compositeOverWhite(200, 77), 238);
    expect(compositeOverWhite(13, 254), 14);
    expect(compositeOverWhite(100, 0), 255);
    for (var v = 0; v < 256; v++) {
      expect(compositeOverWhite(v, 255), v);
    }
  });

  test('non-images are refused with a clear message', () {
    expect(
      () => preprocessImageBytes(
        Uint8List.fromList(utf8.encode('this is a text file, not an image')),
        size,
      ),
      throwsA(isA<ImageDecodeException>()),
    );
  });
}
