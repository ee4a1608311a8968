import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:flutter/material.dart';
import 'package:flutter/services.dart';
import 'package:image_picker/image_picker.dart';

import '../app_services.dart';
import '../classifier.dart';
import 'result_view.dart';

/// Take a photo or pick one; classify it off the UI thread; show the result screen.
class HomeScreen extends StatefulWidget {
  const HomeScreen({super.key, required this.services});

  final AppServices services;

  @override
  State<HomeScreen> createState() => _HomeScreenState();
}

class _HomeScreenState extends State<HomeScreen> {
  final ImagePicker _picker = ImagePicker();
  bool _busy = false;
  String? _error;

  Future<void> _classifyFrom(ImageSource source) async {
    if (_busy) {
      return; // a second tap before the buttons were replaced by the spinner
    }
    final l10n = AppLocalizations.of(context);
    setState(() {
      _busy = true;
      _error = null;
    });
    try {
      // No maxWidth/imageQuality: the picker's own resizing would change the pixels before our
      // Pillow-exact preprocessing.
      final file = await _picker.pickImage(source: source);
      if (file == null) {
        _finish();
        return;
      }
      final bytes = await file.readAsBytes();
      final prediction = await widget.services.classifier.classify(bytes);
      _finish();
      if (!mounted) {
        return;
      }
      await Navigator.of(context).push(
        MaterialPageRoute<void>(
          builder: (_) => ResultScreen(
            image: bytes,
            prediction: prediction,
            threshold: widget.services.meta.threshold,
            catalog: widget.services.catalog,
          ),
        ),
      );
    } on ClassifierException catch (e) {
      _finish(
        error: e.imageUnreadable
            ? l10n.imageUnreadable(e.message)
            : l10n.inferenceFailed(e.message),
      );
    } on PlatformException catch (e) {
      _finish(error: l10n.pickFailed(e.message ?? e.code));
    } on Exception catch (e) {
      // E.g. a FileSystemException from readAsBytes. Without this the spinner would stay up
      // for good: nothing else resets _busy.
      _finish(error: l10n.imageUnreadable('$e'));
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
      appBar: AppBar(title: Text(l10n.appTitle)),
      body: SafeArea(
        child: Center(
          child: SingleChildScrollView(
            padding: const EdgeInsets.all(24),
            child: Column(
              mainAxisSize: MainAxisSize.min,
              children: [
                Icon(Icons.fitness_center, size: 72, color: theme.colorScheme.primary),
                const SizedBox(height: 16),
                Text(
                  l10n.homeHeadline,
                  style: theme.textTheme.headlineSmall,
                  textAlign: TextAlign.center,
                ),
                const SizedBox(height: 8),
                Text(l10n.homeHint, textAlign: TextAlign.center),
                const SizedBox(height: 32),
                if (_busy)
                  const _Busy()
                else
                  _PickButtons(onPick: _classifyFrom),
                if (_error case final error?) ...[
                  const SizedBox(height: 24),
                  Text(
                    error,
                    style: TextStyle(color: theme.colorScheme.error),
                    textAlign: TextAlign.center,
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

  final ValueChanged<ImageSource> onPick;

  @override
  Widget build(BuildContext context) {
    final l10n = AppLocalizations.of(context);
    return Column(
      crossAxisAlignment: CrossAxisAlignment.stretch,
      children: [
        FilledButton.icon(
          onPressed: () => onPick(ImageSource.camera),
          icon: const Icon(Icons.photo_camera),
          label: Text(l10n.takePhoto),
        ),
        const SizedBox(height: 12),
        OutlinedButton.icon(
          onPressed: () => onPick(ImageSource.gallery),
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
    return Column(
      children: [
        const CircularProgressIndicator(),
        const SizedBox(height: 12),
        Text(AppLocalizations.of(context).analysing),
      ],
    );
  }
}
