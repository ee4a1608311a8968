// model_meta.json parsing: the sample is written by the Python exporter's own build_metadata
// (scripts/make_fixtures.py), so a schema change on one side breaks this test.
import 'dart:convert';

import 'package:fitlens_app/src/model_meta.dart';
import 'package:flutter_test/flutter_test.dart';

import 'fixture_support.dart';

Map<String, dynamic> sample() => readJson('$fixturesDir/model_meta.sample.json');

Matcher failsWith(List<String> parts) => throwsA(
  isA<ModelMetaException>().having(
    (e) => e.message,
    'message',
    allOf([for (final part in parts) contains(part)]),
  ),
);

void main() {
  test('the exporter-written sample parses', () {
    final meta = ModelMeta.fromJson(sample(), source: 'sample');
    expect(meta.size, 224);
    expect(meta.inputShape, [1, 3, 224, 224]);
    expect(meta.inputName, 'input');
    expect(meta.probabilitiesOutput, 'probabilities');
    expect(meta.classes.length, greaterThanOrEqualTo(2));
    expect(meta.threshold, inInclusiveRange(0, 1));
    expect(meta.modelAsset, 'assets/models/${meta.modelFile}');
  });

  test('parse reads the JSON text', () {
    final meta = ModelMeta.parse(jsonEncode(sample()), source: 'sample');
    expect(meta.classes, sample()['classes']);
  });

  test('missing fields are all named', () {
    final meta = sample()..remove('threshold');
    (meta['input'] as Map<String, dynamic>).remove('size');
    expect(
      () => ModelMeta.fromJson(meta, source: 'model_meta.json'),
      failsWith(['model_meta.json: missing threshold, input.size', 'schema v1']),
    );
  });

  test('a layout other than NCHW is refused', () {
    final meta = sample();
    (meta['input'] as Map<String, dynamic>)['layout'] = 'NHWC';
    expect(
      () => ModelMeta.fromJson(meta, source: 'm.json'),
      failsWith(['m.json: input.layout="NHWC"; expected "NCHW"']),
    );
  });

  test('a shape that does not match the size is refused', () {
    final meta = sample();
    (meta['input'] as Map<String, dynamic>)['shape'] = [1, 3, 256, 256];
    expect(
      () => ModelMeta.fromJson(meta, source: 'm.json'),
      failsWith(['input.shape=[1,3,256,256]', '[1,3,224,224]']),
    );
  });

  test('duplicated classes and a threshold outside [0, 1] are refused', () {
    final duplicated = sample()..['classes'] = ['squats', 'squats'];
    expect(() => ModelMeta.fromJson(duplicated, source: 'm'), failsWith(['classes=']));
    final threshold = sample()..['threshold'] = 1.5;
    expect(() => ModelMeta.fromJson(threshold, source: 'm'), failsWith(['threshold=1.5']));
  });

  test('broken JSON names the file', () {
    expect(
      () => ModelMeta.parse('{"schema_version": 1,', source: 'assets/models/model_meta.json'),
      failsWith(['assets/models/model_meta.json: not valid JSON']),
    );
  });
}
