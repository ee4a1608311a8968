// Reading the golden fixtures that `python scripts/make_fixtures.py` writes. `flutter test`
// runs with the package root as the working directory.
import 'dart:convert';
import 'dart:io';
import 'dart:typed_data';

import 'package:fitlens_app/src/preprocess.dart';

const String fixturesDir = 'test/fixtures';

Map<String, dynamic> readJson(String path) =>
    jsonDecode(File(path).readAsStringSync()) as Map<String, dynamic>;

/// fixtures.json: size, the two resize set-ups and one entry per image.
Map<String, dynamic> fixtureIndex() => readJson('$fixturesDir/fixtures.json');

List<Map<String, dynamic>> fixtureEntries() =>
    (fixtureIndex()['fixtures'] as List).cast<Map<String, dynamic>>();

/// The geometry the fixtures of [mode] ("stretch" or "letterbox") were made with.
InputGeometry fixtureGeometry(String mode) {
  final index = fixtureIndex();
  final resize = (index['resize'] as Map<String, dynamic>)[mode] as Map<String, dynamic>;
  return InputGeometry(
    size: index['size'] as int,
    mode: ResizeMode.values.byName(resize['mode'] as String),
    fill: (resize['fill'] as List).cast<int>(),
    maxSide: resize['max_side'] as int?,
  );
}

/// A fixture tensor's 8-bit levels, planar CHW, as Python stored them.
Uint8List readLevels(String file) => File('$fixturesDir/$file').readAsBytesSync();

/// Interleaved RGB to planar CHW, the fixtures' layout.
Uint8List toChw(RgbImage image) {
  final plane = image.width * image.height;
  final out = Uint8List(3 * plane);
  for (var i = 0; i < plane; i++) {
    out[i] = image.pixels[i * 3];
    out[plane + i] = image.pixels[i * 3 + 1];
    out[2 * plane + i] = image.pixels[i * 3 + 2];
  }
  return out;
}

/// The largest |a[i] - b[i]| and where it is.
({int value, int index}) maxLevelDiff(List<int> a, List<int> b) {
  var worst = (value: 0, index: -1);
  for (var i = 0; i < a.length; i++) {
    final d = (a[i] - b[i]).abs();
    if (d > worst.value) {
      worst = (value: d, index: i);
    }
  }
  return worst;
}
