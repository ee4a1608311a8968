// model_meta.json parsing: the sample is written by the Python exporter's own build_metadata
// (scripts/make_fixtures.py), so a schema change on one side breaks this test. The expected
// messages are the Python validator's, word for word.
import 'dart:convert';

import 'package:fitlens_app/src/model_meta.dart';
import 'package:fitlens_app/src/preprocess.dart';
import 'package:flutter_test/flutter_test.dart';

import 'fixture_support.dart';

Map<String, dynamic> sample() => readJson('$fixturesDir/model_meta.sample.json');

Map<String, dynamic> input(Map<String, dynamic> meta) => meta['input'] as Map<String, dynamic>;

Matcher failsWith(String message) => throwsA(
  isA<ModelMetaException>().having((e) => e.message, 'message', message),
);

void main() {
  test('the exporter-written sample parses: letterbox, reduce step, reject class', () {
    final meta = ModelMeta.fromJson(sample(), source: 'sample');
    expect(meta.geometry.size, 224);
    expect(meta.geometry.mode, ResizeMode.letterbox);
    expect(meta.geometry.maxSide, 2048);
    expect(meta.geometry.inputShape, [1, 3, 224, 224]);
    expect(meta.rejectClass, sample()['reject_class']);
    expect(meta.outputLabels, [...sample()['classes'] as List, sample()['reject_class']]);
    expect(meta.modelAsset, 'assets/models/${meta.modelFile}');
  });

  test('schema 1 is still read: stretch, no reduce step, no reject class', () {
    final meta = sample()
      ..['schema_version'] = 1
      ..remove('reject_class')
      ..remove('decision_rule');
    input(meta)['resize'] = resizeRule;
    final parsed = ModelMeta.fromJson(meta, source: 'v1');
    expect(parsed.geometry.mode, ResizeMode.stretch);
    expect(parsed.geometry.maxSide, isNull);
    expect(parsed.rejectClass, isNull);
  });

  test('missing fields are all named', () {
    final meta = sample()..remove('threshold');
    input(meta).remove('size');
    (input(meta)['resize'] as Map<String, dynamic>).remove('max_side');
    expect(
      () => ModelMeta.fromJson(meta, source: 'm.json'),
      failsWith(
        'm.json: missing threshold, input.size, input.resize.max_side; expected the '
        'model_meta.json schema v2 written by fitlens.export.metadata.build_metadata',
      ),
    );
  });

  test('bad values give the Python validator\'s messages', () {
    void check(void Function(Map<String, dynamic>) mutate, String message) {
      final meta = sample();
      mutate(meta);
      expect(() => ModelMeta.fromJson(meta, source: 'm.json'), failsWith('m.json: $message'));
    }

    check(
      (m) => m['schema_version'] = 3,
      'schema_version=3; expected one of [1, 2] (re-export the model or update the consumer)',
    );
    check(
      (m) => m['reject_class'] = (m['classes'] as List).first,
      'reject_class=${jsonEncode((sample()['classes'] as List).first)}; expected null or a '
      'non-empty name that is not in classes',
    );
    check(
      (m) => (input(m)['resize'] as Map<String, dynamic>)['mode'] = 'crop',
      'input.resize.mode="crop"; expected "stretch" or "letterbox"',
    );
    check((m) => m['threshold'] = 1.5, 'threshold=1.5; expected a number in [0, 1]');
    check(
      (m) => input(m)['shape'] = [1, 3, 256, 256],
      'input.shape=[1,3,256,256]; expected [1,3,224,224] for input.size=224',
    );
    check((m) => input(m)['layout'] = 'NHWC',
        'input.layout="NHWC"; expected "NCHW" (the only value consumers implement)');
  });

  test('broken JSON names the file', () {
    expect(
      () => ModelMeta.parse('{"schema_version": 2,', source: 'assets/models/model_meta.json'),
      throwsA(isA<ModelMetaException>().having(
        (e) => e.message,
        'message',
        startsWith('assets/models/model_meta.json: not valid JSON'),
      )),
    );
  });
}
