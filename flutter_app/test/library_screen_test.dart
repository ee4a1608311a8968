// The exercise library lists every class of the metadata, named in the phone's language, with
// its muscles and tips one tap away.
import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:fitlens_app/src/ui/library_screen.dart';
import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';

import 'fakes.dart';

void main() {
  testWidgets('every known exercise is listed in Dutch; a tap shows its tips', (tester) async {
    final dutch = lookupAppLocalizations(const Locale('nl'));
    await tester.pumpWidget(
      MaterialApp(
        locale: const Locale('nl'),
        localizationsDelegates: AppLocalizations.localizationsDelegates,
        supportedLocales: AppLocalizations.supportedLocales,
        home: LibraryScreen(classes: sampleMeta.classes, catalog: catalog),
      ),
    );
    await tester.pumpAndSettle();

    expect(find.text(dutch.libraryIntro(sampleMeta.classes.length)), findsOneWidget);
    for (final label in sampleMeta.classes) {
      expect(find.text(catalog.displayName(label, 'nl')), findsWidgets);
    }
    final first = catalog.lookup(sampleMeta.classes.first, 'nl')!;
    await tester.tap(find.text(first.name).first);
    await tester.pumpAndSettle();
    expect(find.text(first.tips.first), findsOneWidget);
  });
}
