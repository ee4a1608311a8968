// The home screen with a fake photo source and classifier: a pick is classified and shown, a
// cancelled pick does nothing, failures are told in the user's language, and a photo lost to
// Android's activity restart is classified when the app comes back.
import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:fitlens_app/src/photo_source.dart';
import 'package:fitlens_app/src/preprocess.dart';
import 'package:fitlens_app/src/ui/home_screen.dart';
import 'package:fitlens_app/src/ui/library_screen.dart';
import 'package:fitlens_app/src/ui/result_view.dart';
import 'package:flutter/material.dart';
import 'package:flutter/services.dart';
import 'package:flutter_test/flutter_test.dart';

import 'fakes.dart';

void main() {
  final english = lookupAppLocalizations(const Locale('en'));
  final dutch = lookupAppLocalizations(const Locale('nl'));

  Future<void> show(
    WidgetTester tester,
    FakeClassifier classifier,
    FakePhotos photos, {
    Locale locale = const Locale('en'),
  }) async {
    await tester.pumpWidget(
      MaterialApp(
        locale: locale,
        localizationsDelegates: AppLocalizations.localizationsDelegates,
        supportedLocales: AppLocalizations.supportedLocales,
        home: HomeScreen(services: fakeServices(classifier), photos: photos),
      ),
    );
    await tester.pumpAndSettle();
  }

  testWidgets('a photo from the gallery is classified and its result shown', (tester) async {
    final classifier = FakeClassifier(predictionFor(sampleMeta.classes.first, 0.9));
    final photos = FakePhotos(picked: '/photos/squat.jpg');
    await show(tester, classifier, photos);

    await tester.tap(find.text(english.pickFromGallery));
    await tester.pumpAndSettle();

    expect(photos.asked, [PhotoOrigin.gallery]);
    expect(classifier.classified, ['/photos/squat.jpg']);
    expect(find.byType(ResultScreen), findsOneWidget);
  });

  testWidgets('a cancelled pick classifies nothing', (tester) async {
    final classifier = FakeClassifier(predictionFor(sampleMeta.classes.first, 0.9));
    await show(tester, classifier, FakePhotos());

    await tester.tap(find.text(english.takePhoto));
    await tester.pumpAndSettle();

    expect(classifier.classified, isEmpty);
    expect(find.byType(ResultScreen), findsNothing);
    expect(find.text(english.takePhoto), findsOneWidget);
  });

  testWidgets('an unreadable photo is explained in Dutch, without English details', (
    tester,
  ) async {
    final classifier = FakeClassifier(
      const ImageDecodeException(ImageProblem.unsupportedFormat, 'not an image package:image'),
    );
    await show(tester, classifier, FakePhotos(picked: '/photos/x.heic'), locale: const Locale('nl'));

    await tester.tap(find.text(dutch.pickFromGallery));
    await tester.pumpAndSettle();

    expect(find.text(dutch.photoUnsupported), findsOneWidget);
    expect(find.textContaining('package:image'), findsNothing);
  });

  testWidgets('a refused camera permission says where to allow it', (tester) async {
    final photos = _RefusingPhotos();
    await show(tester, FakeClassifier(predictionFor(sampleMeta.classes.first, 0.9)), photos);

    await tester.tap(find.text(english.takePhoto));
    await tester.pumpAndSettle();

    expect(find.text(english.cameraDenied), findsOneWidget);
  });

  testWidgets('a photo lost to an activity restart is classified on the next start', (
    tester,
  ) async {
    final classifier = FakeClassifier(predictionFor(sampleMeta.classes.last, 0.9));
    await show(tester, classifier, FakePhotos(lost: '/cache/lost.jpg'));

    expect(classifier.classified, ['/cache/lost.jpg']);
    expect(find.byType(ResultScreen), findsOneWidget);
  });

  testWidgets('the library button opens the exercises the model knows', (tester) async {
    await show(tester, FakeClassifier(predictionFor(sampleMeta.classes.first, 0.9)), FakePhotos());

    await tester.tap(find.byTooltip(english.knownExercises));
    await tester.pumpAndSettle();

    expect(find.byType(LibraryScreen), findsOneWidget);
  });
}

class _RefusingPhotos extends FakePhotos {
  @override
  Future<String?> pick(PhotoOrigin origin) async =>
      throw PlatformException(code: 'camera_access_denied', message: 'denied');
}
