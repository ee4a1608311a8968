// The start-up error screen speaks to the user; the validator's English message waits behind
// "Technical details".
import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:fitlens_app/src/ui/error_screen.dart';
import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';

void main() {
  testWidgets('user text first, details on request', (tester) async {
    final dutch = lookupAppLocalizations(const Locale('nl'));
    const details = 'assets/models/model_meta.json: missing threshold';
    await tester.pumpWidget(
      const MaterialApp(
        locale: Locale('nl'),
        localizationsDelegates: AppLocalizations.localizationsDelegates,
        supportedLocales: AppLocalizations.supportedLocales,
        home: ErrorScreen(details: details),
      ),
    );
    await tester.pumpAndSettle();

    expect(find.text(dutch.modelErrorTitle), findsOneWidget);
    expect(find.text(dutch.modelErrorBody), findsOneWidget);
    expect(find.text(details), findsNothing);
    await tester.tap(find.text(dutch.technicalDetails));
    await tester.pumpAndSettle();
    expect(find.text(details), findsOneWidget);
  });
}
