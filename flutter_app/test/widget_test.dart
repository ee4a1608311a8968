// The app shell: FitlensApp loads its services once, shows the home screen, or the error screen
// when loading fails. (This file also keeps `flutter create` from adding its template test.)
import 'dart:async';

import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:fitlens_app/src/app_services.dart';
import 'package:fitlens_app/src/model_meta.dart';
import 'package:fitlens_app/src/ui/app.dart';
import 'package:fitlens_app/src/ui/error_screen.dart';
import 'package:fitlens_app/src/ui/home_screen.dart';
import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';

import 'fakes.dart';

void main() {
  final english = lookupAppLocalizations(const Locale('en'));

  testWidgets('loading, then the home screen', (tester) async {
    final loaded = Completer<AppServices>();
    await tester.pumpWidget(FitlensApp(load: () => loaded.future, photos: FakePhotos()));
    expect(find.text(english.loadingModel), findsOneWidget);

    loaded.complete(fakeServices(FakeClassifier(predictionFor(sampleMeta.classes.first, 0.9))));
    await tester.pumpAndSettle();
    expect(find.byType(HomeScreen), findsOneWidget);
  });

  testWidgets('a model that fails its checks leads to the error screen', (tester) async {
    await tester.pumpWidget(
      FitlensApp(
        load: () => Future.error(const ModelMetaException('model_meta.json: missing sha256')),
        photos: FakePhotos(),
      ),
    );
    await tester.pumpAndSettle();
    expect(find.byType(ErrorScreen), findsOneWidget);
    expect(find.text(english.modelErrorTitle), findsOneWidget);
  });

  testWidgets('closing the app closes the session', (tester) async {
    final classifier = FakeClassifier(predictionFor(sampleMeta.classes.first, 0.9));
    await tester.pumpWidget(
      FitlensApp(load: () async => fakeServices(classifier), photos: FakePhotos()),
    );
    await tester.pumpAndSettle();
    await tester.pumpWidget(const SizedBox());
    expect(classifier.closed, isTrue);
  });
}
