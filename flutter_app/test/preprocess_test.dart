// The Dart preprocessing against the tensors Python computed for the same files
// (test/fixtures, written by scripts/make_fixtures.py from fitlens.data.images.preprocess), in
// both resize modes, with the reduce step running on the larger fixtures.
import 'dart:convert';
import 'dart:io';
import 'dart:typed_data';

import 'package:fitlens_app/src/preprocess.dart';
import 'package:flutter_test/flutter_test.dart';

import 'fixture_support.dart';

void main() {
  group('fixture image -> tensor matches Python', () {
    for (final entry in fixtureEntries()) {
      for (final mode in ['stretch', 'letterbox']) {
        test('${entry['file']} ($mode)', () {
          final geometry = fixtureGeometry(mode);
          final file = (entry['tensors'] as Map<String, dynamic>)[mode]['file'] as String;
          final expected = readLevels(file);
          final fitted = fitToInput(
            decodeRgb(File('$fixturesDir/${entry['file']}').readAsBytesSync()),
            geometry,
          );
          final actual = toChw(fitted);
          expect(actual.length, expected.length);
          final diff = maxLevelDiff(actual, expected);
          final allowed = entry['max_level_diff'] as int;
          final plane = geometry.size * geometry.size;
          // Shown on failure, and worth reading once on success too: the decoders' real gap.
          printOnFailure(
            '${entry['file']} $mode: max |diff| ${diff.value}/255 at channel '
            '${diff.index ~/ plane}, y ${diff.index % plane ~/ geometry.size}, x '
            '${diff.index % geometry.size}; allowed $allowed/255 (fixtures.json explains why)',
          );
          expect(diff.value, lessThanOrEqualTo(allowed));
        });
      }
    }
  });

  test('the float tensor is level / 255 in float32, planar', () {
    final image = RgbImage(2, 1, Uint8List.fromList([0, 128, 255, 1, 2, 3]));
    expect(toChwFloat(image), Float32List.fromList([0, 1 / 255, 128 / 255, 2 / 255, 1, 3 / 255]));
  });

  test('EXIF orientation 6 is applied: the sideways JPEG decodes upright', () {
    final rgb = decodeRgb(File('$fixturesDir/rotated_exif6.jpg').readAsBytesSync());
    expect(rgb.width, greaterThan(rgb.height));
  });

  test('reduce is Pillow Image.reduce, edges included (values from Pillow 13)', () {
    // 5x3 reduced by 2: full 2x2 blocks, a 1-wide column, a 1-high row and a 1x1 corner.
    final image = RgbImage(
      5,
      3,
      Uint8List.fromList([
        0, 10, 20, 100, 110, 120, 200, 210, 220, 255, 0, 128, 30, 60, 90, //
        1, 2, 3, 4, 5, 6, 7, 8, 9, 250, 251, 252, 9, 9, 9, //
        50, 50, 50, 60, 60, 60, 70, 70, 70, 80, 80, 80, 90, 90, 90,
      ]),
    );
    final reduced = reduceLikePillow(image, 2);
    expect((reduced.width, reduced.height), (3, 2));
    expect(reduced.pixels, [
      26, 32, 37, 178, 117, 152, 20, 35, 50, //
      55, 55, 55, 75, 75, 75, 90, 90, 90,
    ]);
  });

  test('geometry: reduce factor and letterbox placement follow the contract', () {
    const letterbox = InputGeometry(
      size: 224,
      mode: ResizeMode.letterbox,
      fill: [114, 114, 114],
      maxSide: 2048,
    );
    expect(letterbox.reduceFactor(8160, 6120), 4);
    expect(letterbox.reduceFactor(2048, 100), 1);
    expect(letterbox.reduceFactor(2049, 100), 2);
    expect(letterbox.placement(4000, 3000), (left: 0, top: 28, width: 224, height: 168));
    expect(letterbox.placement(1, 4000), (left: 111, top: 0, width: 1, height: 224));
    const stretch = InputGeometry(size: 224, mode: ResizeMode.stretch, fill: [0, 0, 0], maxSide: null);
    expect(stretch.reduceFactor(100000, 1), 1);
    expect(stretch.placement(4000, 3000), (left: 0, top: 0, width: 224, height: 224));
  });

  test('a letterboxed image keeps the fill colour around it', () {
    const geometry = InputGeometry(size: 8, mode: ResizeMode.letterbox, fill: [1, 2, 3], maxSide: 8);
    final white = RgbImage(8, 2, Uint8List(8 * 2 * 3)..fillRange(0, 48, 255));
    final fitted = fitToInput(white, geometry);
    expect(fitted.pixels.sublist(0, 3), [1, 2, 3]); // top-left: fill
    expect(fitted.pixels.sublist((4 * 8) * 3, (4 * 8) * 3 + 3), [255, 255, 255]); // the image
  });

  test('resize is Pillow BILINEAR, pixel for pixel (values from Pillow 13)', () {
    final row = RgbImage(
      5,
      1,
      Uint8List.fromList([0, 10, 20, 100, 110, 120, 200, 210, 220, 255, 0, 128, 30, 60, 90]),
    );
    expect(resizeBilinearLikePillow(row, 2, 1).pixels, [98, 96, 111, 164, 72, 136]);
    final tall = RgbImage(
      2,
      6,
      Uint8List.fromList([
        248, 194, 190, 207, 147, 26, 237, 21, 245, 211, 239, 45, 5, 157, 159, 60, 54, 236, //
        109, 46, 199, 82, 32, 205, 36, 7, 134, 222, 57, 146, 8, 149, 14, 15, 22, 10,
      ]),
    );
    // 2x6 -> 3x2: vertical pass first, as Pillow 13 orders it.
    expect(resizeBilinearLikePillow(tall, 3, 2).pixels, [
      166, 101, 204, 161, 123, 156, 156, 144, 108, //
      43, 71, 123, 79, 57, 131, 115, 42, 138,
    ]);
  });

  test('alpha compositing over white is Pillow alpha_composite (values from Pillow 13)', () {
    expect(compositeOverWhite(0, 128), 127);
    expect(compositeOverWhite(200, 77), 238);
    expect(compositeOverWhite(100, 0), 255);
    for (var v = 0; v < 256; v++) {
      expect(compositeOverWhite(v, 255), v);
    }
  });

  test('unusable files are refused with the reason the user is told', () {
    expect(
      () => decodeRgb(Uint8List.fromList(utf8.encode('this is a text file, not an image'))),
      throwsA(isA<ImageDecodeException>().having((e) => e.problem, 'problem', ImageProblem.unsupportedFormat)),
    );
    final jpeg = File('$fixturesDir/photo.jpg').readAsBytesSync();
    expect(
      () => decodeRgb(jpeg, maxPixels: 1000),
      throwsA(isA<ImageDecodeException>().having((e) => e.problem, 'problem', ImageProblem.tooLarge)),
    );
  });
}
