// Reading the golden fixtures that `python scripts/make_fixtures.py` writes. `flutter test`
// runs with the package root as the working directory.
import 'dart:convert';
import 'dart:io';
import 'dart:typed_data';

const String fixturesDir = 'test/fixtures';

Map<String, dynamic> readJson(String path) =>
    jsonDecode(File(path).readAsStringSync()) as Map<String, dynamic>;

/// fixtures.json: size, resize rule and one entry per image.
Map<String, dynamic> fixtureIndex() => readJson('$fixturesDir/fixtures.json');

List<Map<String, dynamic>> fixtureEntries() =>
    (fixtureIndex()['fixtures'] as List).cast<Map<String, dynamic>>();

/// A raw little-endian float32 file, as numpy's `astype('<f4').tobytes()` writes it.
Float32List readFloat32(String path) {
  final bytes = File(path).readAsBytesSync();
  final data = ByteData.sublistView(bytes);
  return Float32List.fromList([
    for (var i = 0; i < bytes.length ~/ 4; i++) data.getFloat32(i * 4, Endian.little),
  ]);
}

/// The largest |a[i] - b[i]| and where it is.
({double value, int index}) maxAbsDiff(List<double> a, List<double> b) {
  var worst = (value: 0.0, index: -1);
  for (var i = 0; i < a.length; i++) {
    final d = (a[i] - b[i]).abs();
    if (d > worst.value) {
      worst = (value: d, index: i);
    }
  }
  return worst;
}
