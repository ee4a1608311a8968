import 'dart:developer' as developer;

import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:flutter/material.dart';

import '../app_services.dart';
import '../photo_source.dart';
import 'library_screen.dart';
import 'messages.dart';
import 'result_view.dart';

/// Take a photo or pick one; classify it off the UI thread; show the result screen.
class HomeScreen extends StatefulWidget {
  const HomeScreen({super.key, required this.services, required this.photos});

  final AppServices services;
  final PhotoSource photos;

  @override
  State<HomeScreen> createState() => _HomeScreenState();
}

class _HomeScreenState extends State<HomeScreen> {
  bool _busy = false;
  String? _error;

  @override
  void initState() {
    super.initState();
    _recover();
  }

  /// A photo taken just before Android destroyed the activity comes back on the next start.
  Future<void> _recover() async {
    try {
      if (await widget.photos.recoverLost() case final path?) {
        await _run(() async => path);
      }
    } on Exception catch (e) {
      if (mounted) {
        _finish(error: failureText(AppLocalizations.of(context), e));
      }
    }
  }

  Future<void> _run(Future<String?> Function() photo) async {
    if (_busy) {
      return; // a second tap before the buttons were replaced by the spinner
    }
    setState(() {
      _busy = true;
      _error = null;
    });
    try {
      final path = await photo();
      if (path == null) {
        _finish();
        return;
      }
      final prediction = await widget.services.classifier.classify(path);
      _finish();
      if (!mounted) {
        return;
      }
      await Navigator.of(context).push(
        MaterialPageRoute<void>(
          builder: (_) => ResultScreen(
            photoPath: path,
            prediction: prediction,
            threshold: widget.services.meta.threshold,
            catalog: widget.services.catalog,
          ),
        ),
      );
    } on Exception catch (e, stack) {
      // Without this the spinner would stay up for good: nothing else resets _busy.
      developer.log('photo failed', error: e, stackTrace: stack, name: 'fitlens');
      if (mounted) {
        _finish(error: failureText(AppLocalizations.of(context), e));
      }
    }
  }

  void _finish({String? error}) {
    if (mounted) {
      setState(() {
        _busy = false;
        _error = error;
      });
    }
  }

  @override
  Widget build(BuildContext context) {
    final l10n = AppLocalizations.of(context);
    final theme = Theme.of(context);
    return Scaffold(
      appBar: AppBar(
        title: Text(l10n.appTitle),
        actions: [
          IconButton(
            icon: const Icon(Icons.menu_book),
            tooltip: l10n.knownExercises,
            onPressed: () => Navigator.of(context).push(
              MaterialPageRoute<void>(
                builder: (_) => LibraryScreen(
                  classes: widget.services.meta.classes,
                  catalog: widget.services.catalog,
                ),
              ),
            ),
          ),
        ],
      ),
      body: SafeArea(
        child: Center(
          child: SingleChildScrollView(
            padding: const EdgeInsets.all(24),
            child: Column(
              mainAxisSize: MainAxisSize.min,
              children: [
                ExcludeSemantics(
                  child: Icon(Icons.fitness_center, size: 72, color: theme.colorScheme.primary),
                ),
                const SizedBox(height: 16),
                Semantics(
                  header: true,
                  child: Text(
                    l10n.homeHeadline,
                    style: theme.textTheme.headlineSmall,
                    textAlign: TextAlign.center,
                  ),
                ),
                const SizedBox(height: 8),
                Text(l10n.homeHint, textAlign: TextAlign.center),
                const SizedBox(height: 32),
                if (_busy)
                  const _Busy()
                else
                  _PickButtons(onPick: (origin) => _run(() => widget.photos.pick(origin))),
                if (_error case final error?) ...[
                  const SizedBox(height: 24),
                  Semantics(
                    liveRegion: true,
                    child: Text(
                      error,
                      style: TextStyle(color: theme.colorScheme.error),
                      textAlign: TextAlign.center,
                    ),
                  ),
                ],
              ],
            ),
          ),
        ),
      ),
    );
  }
}

class _PickButtons extends StatelessWidget {
  const _PickButtons({required this.onPick});

  final ValueChanged<PhotoOrigin> onPick;

  @override
  Widget build(BuildContext context) {
    final l10n = AppLocalizations.of(context);
    return Column(
      crossAxisAlignment: CrossAxisAlignment.stretch,
      children: [
        FilledButton.icon(
          onPressed: () => onPick(PhotoOrigin.camera),
          icon: const Icon(Icons.photo_camera),
          label: Text(l10n.takePhoto),
        ),
        const SizedBox(height: 12),
        OutlinedButton.icon(
          onPressed: () => onPick(PhotoOrigin.gallery),
          icon: const Icon(Icons.photo_library),
          label: Text(l10n.pickFromGallery),
        ),
      ],
    );
  }
}

class _Busy extends StatelessWidget {
  const _Busy();

  @override
  Widget build(BuildContext context) {
    return Semantics(
      liveRegion: true,
      child: Column(
        children: [
          const CircularProgressIndicator(),
          const SizedBox(height: 12),
          Text(AppLocalizations.of(context).analysing),
        ],
      ),
    );
  }
}
