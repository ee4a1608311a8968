import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:flutter/material.dart';

/// Shown instead of the app when model_meta.json or the model is missing or wrong: the
/// validator's message says which file and field, the hint says how to fix it.
class ErrorScreen extends StatelessWidget {
  const ErrorScreen({super.key, required this.message});

  final String message;

  @override
  Widget build(BuildContext context) {
    final l10n = AppLocalizations.of(context);
    final theme = Theme.of(context);
    return Scaffold(
      body: SafeArea(
        child: SingleChildScrollView(
          padding: const EdgeInsets.all(24),
          child: Column(
            crossAxisAlignment: CrossAxisAlignment.start,
            children: [
              Icon(Icons.error_outline, size: 48, color: theme.colorScheme.error),
              const SizedBox(height: 16),
              Text(l10n.modelErrorTitle, style: theme.textTheme.headlineSmall),
              const SizedBox(height: 16),
              SelectableText(message, style: theme.textTheme.bodyMedium),
              const SizedBox(height: 16),
              Text(l10n.modelErrorHint, style: theme.textTheme.bodySmall),
            ],
          ),
        ),
      ),
    );
  }
}
