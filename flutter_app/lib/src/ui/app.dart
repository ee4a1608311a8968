/// The app shell: localisation, theme, and the start-up gate that loads the model once.
library;

import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:flutter/material.dart';
import 'package:flutter/services.dart';

import '../app_services.dart';
import 'error_screen.dart';
import 'home_screen.dart';

class FitlensApp extends StatelessWidget {
  const FitlensApp({super.key});

  @override
  Widget build(BuildContext context) {
    return MaterialApp(
      onGenerateTitle: (context) => AppLocalizations.of(context).appTitle,
      theme: ThemeData(colorSchemeSeed: Colors.teal),
      localizationsDelegates: AppLocalizations.localizationsDelegates,
      supportedLocales: AppLocalizations.supportedLocales,
      home: StartupGate(bundle: rootBundle),
    );
  }
}

/// Loads [AppServices] once, then shows the home screen, or the error screen if the exported
/// model is missing or does not fit the app.
class StartupGate extends StatefulWidget {
  const StartupGate({super.key, required this.bundle});

  final AssetBundle bundle;

  @override
  State<StartupGate> createState() => _StartupGateState();
}

class _StartupGateState extends State<StartupGate> {
  late final Future<AppServices> _services;
  AppServices? _loaded;

  @override
  void initState() {
    super.initState();
    _services = AppServices.load(widget.bundle);
    _services.then<void>(
      (services) {
        if (mounted) {
          _loaded = services;
        } else {
          // Disposed while loading: nobody will dispose it later, so stop the isolate now.
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
        final services = snapshot.data;
        if (snapshot.hasError) {
          return ErrorScreen(message: '${snapshot.error}');
        }
        if (services == null) {
          return const _LoadingScreen();
        }
        return HomeScreen(services: services);
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
        child: Column(
          mainAxisSize: MainAxisSize.min,
          children: [
            const CircularProgressIndicator(),
            const SizedBox(height: 16),
            Text(AppLocalizations.of(context).loadingModel),
          ],
        ),
      ),
    );
  }
}
