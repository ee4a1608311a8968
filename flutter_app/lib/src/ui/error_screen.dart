import 'package:fitlens_app/l10n/gen/app_localizations.dart';
import 'package:flutter/material.dart';

/// Shown instead of the app when the model cannot start: what it means for the user, in their
/// language, with the validator's English message (file, field, fix) behind "Technical details"
/// for a bug report.
class ErrorScreen extends StatelessWidget {
  const ErrorScreen({super.key, required this.details});

  final String details;

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
              Semantics(
                header: true,
                liveRegion: true,
                child: Text(l10n.modelErrorTitle, style: theme.textTheme.headlineSmall),
              ),
              const SizedBox(height: 16),
              Text(l10n.modelErrorBody, style: theme.textTheme.bodyLarge),
              const SizedBox(height: 16),
              ExpansionTile(
                tilePadding: EdgeInsets.zero,
                title: Text(l10n.technicalDetails),
                children: [SelectableText(details, style: theme.textTheme.bodySmall)],
              ),
            ],
          ),
        ),
      ),
    );
  }
}
