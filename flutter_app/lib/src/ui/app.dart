/// The app shell: localisation, light and dark theme, and the start-up gate that loads the
/// model once.
library;

import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:flutter/material.dart';
import 'package:flutter/services.dart';

import '../app_services.dart';
import '../photo_source.dart';
import 'error_screen.dart';
import 'home_screen.dart';

class FitlensApp extends StatelessWidget {
  const FitlensApp({super.key, required this.load, required this.photos});

  /// Production: `() => AppServices.load(rootBundle)`; tests pass a fake.
  final Future<AppServices> Function() load;
  final PhotoSource photos;

  static FitlensApp production() =>
      FitlensApp(load: () => AppServices.load(rootBundle), photos: PickerPhotoSource());

  @override
  Widget build(BuildContext context) {
    return MaterialApp(
      onGenerateTitle: (context) => AppLocalizations.of(context).appTitle,
      theme: ThemeData(colorSchemeSeed: Colors.teal),
      darkTheme: ThemeData(colorSchemeSeed: Colors.teal, brightness: Brightness.dark),
      localizationsDelegates: AppLocalizations.localizationsDelegates,
      supportedLocales: AppLocalizations.supportedLocales,
      home: StartupGate(load: load, photos: photos),
    );
  }
}

/// Loads [AppServices] once, then shows the home screen, or the error screen if the model is
/// missing, damaged or does not fit the app.
class StartupGate extends StatefulWidget {
  const StartupGate({super.key, required this.load, required this.photos});

  final Future<AppServices> Function() load;
  final PhotoSource photos;

  @override
  State<StartupGate> createState() => _StartupGateState();
}

class _StartupGateState extends State<StartupGate> {
  late final Future<AppServices> _services;
  AppServices? _loaded;

  @override
  void initState() {
    super.initState();
    _services = widget.load();
    _services.then<void>(
      (services) {
        if (mounted) {
          _loaded = services;
        } else {
          // Disposed while loading: nobody will close the session later, so close it now.
          services.dispose();
        }
      },
      // The FutureBuilder shows the error; this only keeps it from being reported unhandled.
      onError: (Object _) {},
    );
  }

  @override
  void dispose() {
    _loaded?.dispose();
    super.dispose();
  }

  @override
  Widget build(BuildContext context) {
    return FutureBuilder<AppServices>(
      future: _services,
      builder: (context, snapshot) {
        if (snapshot.hasError) {
          return ErrorScreen(details: '${snapshot.error}');
        }
        final services = snapshot.data;
        if (services == null) {
          return const _LoadingScreen();
        }
        return HomeScreen(services: services, photos: widget.photos);
      },
    );
  }
}

class _LoadingScreen extends StatelessWidget {
  const _LoadingScreen();

  @override
  Widget build(BuildContext context) {
    return Scaffold(
      body: Center(
        child: Semantics(
          liveRegion: true,
          child: Column(
            mainAxisSize: MainAxisSize.min,
            children: [
              const CircularProgressIndicator(),
              const SizedBox(height: 16),
              Text(AppLocalizations.of(context).loadingModel),
            ],
          ),
        ),
      ),
    );
  }
}
